package ecslocal

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The task metadata endpoint v4 as Fargate (platform 1.4.0) serves it: the shapes follow
// AWS's "Task metadata v4 examples for tasks on Fargate". Docker stats (/stats,
// /task/stats) are not served.

type metaNetwork struct {
	NetworkMode              string   `json:"NetworkMode"`
	IPv4Addresses            []string `json:"IPv4Addresses"`
	AttachmentIndex          int      `json:"AttachmentIndex"`
	MACAddress               string   `json:"MACAddress"`
	IPv4SubnetCIDRBlock      string   `json:"IPv4SubnetCIDRBlock"`
	DomainNameServers        []string `json:"DomainNameServers"`
	DomainNameSearchList     []string `json:"DomainNameSearchList"`
	PrivateDNSName           string   `json:"PrivateDNSName"`
	SubnetGatewayIpv4Address string   `json:"SubnetGatewayIpv4Address"`
}

type metaLimits struct {
	CPU    float64 `json:"CPU"`
	Memory int     `json:"Memory,omitempty"`
}

type metaContainer struct {
	DockerID      string            `json:"DockerId"`
	Name          string            `json:"Name"`
	DockerName    string            `json:"DockerName"`
	Image         string            `json:"Image"`
	ImageID       string            `json:"ImageID"`
	Labels        map[string]string `json:"Labels"`
	DesiredStatus string            `json:"DesiredStatus"`
	KnownStatus   string            `json:"KnownStatus"`
	Limits        metaLimits        `json:"Limits"`
	CreatedAt     string            `json:"CreatedAt,omitempty"`
	StartedAt     string            `json:"StartedAt,omitempty"`
	FinishedAt    string            `json:"FinishedAt,omitempty"`
	ExitCode      *int              `json:"ExitCode,omitempty"`
	Type          string            `json:"Type"`
	ContainerARN  string            `json:"ContainerARN"`
	Networks      []metaNetwork     `json:"Networks"`
	Snapshotter   string            `json:"Snapshotter"`
}

type metaClockDrift struct {
	ClockErrorBound            float64 `json:"ClockErrorBound"`
	ReferenceTimestamp         string  `json:"ReferenceTimestamp"`
	ClockSynchronizationStatus string  `json:"ClockSynchronizationStatus"`
}

type metaTask struct {
	Cluster          string          `json:"Cluster"`
	TaskARN          string          `json:"TaskARN"`
	Family           string          `json:"Family"`
	Revision         string          `json:"Revision"`
	DesiredStatus    string          `json:"DesiredStatus"`
	KnownStatus      string          `json:"KnownStatus"`
	Limits           metaLimits      `json:"Limits"`
	PullStartedAt    string          `json:"PullStartedAt,omitempty"`
	PullStoppedAt    string          `json:"PullStoppedAt,omitempty"`
	AvailabilityZone string          `json:"AvailabilityZone"`
	LaunchType       string          `json:"LaunchType"`
	Containers       []metaContainer `json:"Containers"`
	ClockDrift       metaClockDrift  `json:"ClockDrift"`
}

// serveMetadata answers GET /v4/<DockerId> (the container) and /v4/<DockerId>/task, and
// the credentials endpoint, GET /v2/credentials/<id>, on the metadata server's loopback
// listener: for every task (but the credentials of isolated tasks, see serveCredentials).
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) { s.serveMetadataFor(w, r, nil) }

// metadataHandler serves t's metadata and credentials only: what an isolated task's
// namespace has at MetadataAddress.
func (s *Server) metadataHandler(t *task) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveMetadataFor(w, r, t) })
}

// taskMetadataURILocked is the task's ECS_CONTAINER_METADATA_URI_V4: inside its own
// namespace when it is isolated, as on Fargate; else the metadata server's.
func (s *Server) taskMetadataURILocked(t *task) string {
	if s.iso != nil && s.iso.namespaces {
		return "http://" + MetadataAddress.Addr().String() + "/v4/" + t.dockerID
	}
	return t.metadataURI
}

func (s *Server) serveMetadataFor(w http.ResponseWriter, r *http.Request, scope *task) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == strings.TrimSuffix(CredentialsPathPrefix, "/") || strings.HasPrefix(r.URL.Path, CredentialsPathPrefix) {
		s.serveCredentials(w, r, scope)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v4/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	dockerID, sub, _ := strings.Cut(rest, "/")
	taskID, _, _ := strings.Cut(dockerID, "-")

	s.mu.Lock()
	t, found := s.tasks[taskID]
	if !found || t.dockerID != dockerID || scope != nil && t != scope {
		s.mu.Unlock()
		http.Error(w, "no task metadata for "+dockerID, http.StatusNotFound)
		return
	}
	var body any
	switch sub {
	case "":
		body = s.metaContainerLocked(t)
	case "task":
		body = s.metaTaskLocked(t)
	}
	s.mu.Unlock()
	if body == nil {
		http.NotFound(w, r)
		return
	}
	b, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (s *Server) metaContainerLocked(t *task) metaContainer {
	c := metaContainer{
		DockerID: t.dockerID, Name: t.def.container, DockerName: t.def.container, Image: t.def.image,
		ImageID: t.imageDigest,
		Labels: map[string]string{
			"com.amazonaws.ecs.cluster":                 t.clusterArn,
			"com.amazonaws.ecs.container-name":          t.def.container,
			"com.amazonaws.ecs.task-arn":                t.arn,
			"com.amazonaws.ecs.task-definition-family":  t.def.family,
			"com.amazonaws.ecs.task-definition-version": strconv.Itoa(t.def.revision),
		},
		DesiredStatus: metaStatus(t.desiredStatus), KnownStatus: metaKnown(t),
		Limits:    metaLimits{CPU: 0},
		CreatedAt: rfc3339(t.pullStoppedAt), StartedAt: rfc3339(t.startedAt),
		Type: "NORMAL", ContainerARN: t.containerArn, Snapshotter: "overlayfs",
		Networks: []metaNetwork{{
			NetworkMode: "awsvpc", IPv4Addresses: []string{t.ip.String()}, AttachmentIndex: 0,
			MACAddress: t.mac, IPv4SubnetCIDRBlock: s.pool.prefix.String(),
			DomainNameServers: []string{}, DomainNameSearchList: []string{dnsDomain(s.region)},
			PrivateDNSName:           privateDNSName(t.ip, s.region),
			SubnetGatewayIpv4Address: s.pool.prefix.Addr().Next().String() + "/" + strconv.Itoa(s.pool.prefix.Bits()),
		}},
	}
	if t.containerStatus == statusStopped {
		c.FinishedAt = rfc3339(t.executionStoppedAt)
		c.ExitCode = t.exitCode
	}
	return c
}

func (s *Server) metaTaskLocked(t *task) metaTask {
	cpu, _ := strconv.ParseFloat(t.cpu, 64)
	memory, _ := strconv.Atoi(t.memory)
	return metaTask{
		Cluster: t.clusterArn, TaskARN: t.arn, Family: t.def.family, Revision: strconv.Itoa(t.def.revision),
		DesiredStatus: metaStatus(t.desiredStatus), KnownStatus: metaKnown(t),
		Limits:        metaLimits{CPU: cpu / 1024, Memory: memory},
		PullStartedAt: rfc3339(t.pullStartedAt), PullStoppedAt: rfc3339(t.pullStoppedAt),
		AvailabilityZone: s.zone, LaunchType: "FARGATE",
		Containers: []metaContainer{s.metaContainerLocked(t)},
		ClockDrift: metaClockDrift{
			ClockErrorBound: 0.5, ReferenceTimestamp: time.Now().UTC().Truncate(time.Second).Format(time.RFC3339),
			ClockSynchronizationStatus: "SYNCHRONIZED",
		},
	}
}

// metaStatus maps the API's desired status to the agent's, which has no PROVISIONING.
func metaStatus(s string) string {
	if s == statusStopped {
		return statusStopped
	}
	return statusRunning
}

// metaKnown is the container's status as the Fargate agent names it.
func metaKnown(t *task) string {
	switch {
	case t.containerStatus == statusRunning || t.containerStatus == statusStopped:
		return t.containerStatus
	case !t.pullStoppedAt.IsZero():
		return "PULLED"
	}
	return "NONE"
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
