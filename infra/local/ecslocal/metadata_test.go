package ecslocal_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Field names as Fargate's task metadata endpoint v4 spells them.
type metaNetwork struct {
	NetworkMode              string
	IPv4Addresses            []string
	AttachmentIndex          *int
	MACAddress               string
	IPv4SubnetCIDRBlock      string
	PrivateDNSName           string
	SubnetGatewayIpv4Address string
}

type metaContainer struct {
	DockerID      string `json:"DockerId"`
	Name          string
	Image         string
	ImageID       string
	Labels        map[string]string
	DesiredStatus string
	KnownStatus   string
	CreatedAt     time.Time
	StartedAt     time.Time
	Type          string
	ContainerARN  string
	Networks      []metaNetwork
}

type metaTask struct {
	Cluster          string
	TaskARN          string
	Family           string
	Revision         string
	DesiredStatus    string
	KnownStatus      string
	Limits           struct{ CPU, Memory float64 }
	PullStartedAt    time.Time
	PullStoppedAt    time.Time
	AvailabilityZone string
	LaunchType       string
	Containers       []metaContainer
}

func getMeta(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("decode %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

func TestServer_Metadata_ShapedLikeFargate(t *testing.T) {
	t.Parallel()
	e := start(t)
	task := e.waitStatus(t, aws.ToString(e.run(t, runInput("meta")).TaskArn), "RUNNING")
	arn, ip := aws.ToString(task.TaskArn), privateIP(task)
	info := e.srv.Tasks()[0]
	if !strings.HasPrefix(info.MetadataURI, e.srv.MetadataEndpoint()+"/v4/"+taskID(arn)+"-") {
		t.Fatalf("metadata URI %s", info.MetadataURI)
	}

	var c metaContainer
	if code := getMeta(t, info.MetadataURI, &c); code != http.StatusOK {
		t.Fatalf("container metadata: %d", code)
	}
	if c.DockerID != info.MetadataURI[strings.LastIndex(info.MetadataURI, "/")+1:] || c.Name != "agent" || c.Type != "NORMAL" ||
		c.KnownStatus != "RUNNING" || c.DesiredStatus != "RUNNING" || c.StartedAt.IsZero() ||
		c.ContainerARN != aws.ToString(task.Containers[0].ContainerArn) || !strings.HasPrefix(c.ImageID, "sha256:") {
		t.Errorf("container metadata %+v", c)
	}
	if c.Labels["com.amazonaws.ecs.task-arn"] != arn || c.Labels["com.amazonaws.ecs.cluster"] != e.srv.ClusterARN("sandboxes") ||
		c.Labels["com.amazonaws.ecs.task-definition-family"] != "sandbox" || c.Labels["com.amazonaws.ecs.task-definition-version"] != "1" {
		t.Errorf("labels %v", c.Labels)
	}
	if len(c.Networks) != 1 {
		t.Fatalf("networks %+v", c.Networks)
	}
	n := c.Networks[0]
	if n.NetworkMode != "awsvpc" || len(n.IPv4Addresses) != 1 || n.IPv4Addresses[0] != ip || n.AttachmentIndex == nil ||
		n.IPv4SubnetCIDRBlock != e.pool.String() || n.MACAddress == "" || !strings.HasPrefix(n.PrivateDNSName, "ip-127-") {
		t.Errorf("network %+v, want awsvpc with %s in %s", n, ip, e.pool)
	}

	var tm metaTask
	if code := getMeta(t, info.MetadataURI+"/task", &tm); code != http.StatusOK {
		t.Fatalf("task metadata: %d", code)
	}
	if tm.TaskARN != arn || tm.Cluster != e.srv.ClusterARN("sandboxes") || tm.Family != "sandbox" || tm.Revision != "1" ||
		tm.KnownStatus != "RUNNING" || tm.LaunchType != "FARGATE" || tm.AvailabilityZone != "us-east-1a" ||
		tm.Limits.CPU != 0.25 || tm.Limits.Memory != 512 || tm.PullStoppedAt.IsZero() ||
		len(tm.Containers) != 1 || tm.Containers[0].Networks[0].IPv4Addresses[0] != ip {
		t.Errorf("task metadata %+v", tm)
	}

	for _, bad := range []string{"/v4/" + taskID(arn) + "-0000000000", "/v4/nope", "/v3/x", info.MetadataURI[len(e.srv.MetadataEndpoint()):] + "/stats"} {
		var v any
		if code := getMeta(t, e.srv.MetadataEndpoint()+bad, &v); code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", bad, code)
		}
	}
}
