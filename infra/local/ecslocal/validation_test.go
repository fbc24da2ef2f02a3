package ecslocal_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

func TestServer_RunTask_InvalidInputGetsECSErrors(t *testing.T) {
	t.Parallel()
	e := start(t)
	cases := []struct {
		name   string
		change func(*ecs.RunTaskInput)
		want   string // the error code
	}{
		{"unknown cluster", func(in *ecs.RunTaskInput) { in.Cluster = aws.String("nope") }, "ClusterNotFoundException"},
		{"cluster ARN of another account", func(in *ecs.RunTaskInput) {
			in.Cluster = aws.String("arn:aws:ecs:us-east-1:111111111111:cluster/sandboxes")
		}, "ClusterNotFoundException"},
		{"unknown task definition", func(in *ecs.RunTaskInput) { in.TaskDefinition = aws.String("nope") }, "ClientException"},
		{"unknown revision", func(in *ecs.RunTaskInput) { in.TaskDefinition = aws.String("sandbox:9") }, "ClientException"},
		{"no network configuration", func(in *ecs.RunTaskInput) { in.NetworkConfiguration = nil }, "InvalidParameterException"},
		{"no subnets", func(in *ecs.RunTaskInput) { in.NetworkConfiguration.AwsvpcConfiguration.Subnets = []string{} }, "InvalidParameterException"},
		{"malformed subnet", func(in *ecs.RunTaskInput) {
			in.NetworkConfiguration.AwsvpcConfiguration.Subnets = []string{"10.0.0.0/24"}
		}, "InvalidParameterException"},
		{"launch type and capacity provider", func(in *ecs.RunTaskInput) {
			in.CapacityProviderStrategy = []types.CapacityProviderStrategyItem{{CapacityProvider: aws.String("FARGATE_SPOT"), Weight: 1}}
		}, "InvalidParameterException"},
		{"EC2 launch type", func(in *ecs.RunTaskInput) { in.LaunchType = types.LaunchTypeEc2 }, "InvalidParameterException"},
		{"unknown capacity provider", func(in *ecs.RunTaskInput) {
			in.LaunchType = ""
			in.CapacityProviderStrategy = []types.CapacityProviderStrategyItem{{CapacityProvider: aws.String("MINE"), Weight: 1}}
		}, "InvalidParameterException"},
		{"override of an unknown container", func(in *ecs.RunTaskInput) {
			in.Overrides = &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{Name: aws.String("web")}}}
		}, "InvalidParameterException"},
		{"overrides too long", func(in *ecs.RunTaskInput) {
			in.Overrides = &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{Name: aws.String("agent"),
				Environment: []types.KeyValuePair{{Name: aws.String("BIG"), Value: aws.String(strings.Repeat("x", 9000))}}}}}
		}, "InvalidParameterException"},
		{"reserved tag prefix", func(in *ecs.RunTaskInput) {
			in.Tags = []types.Tag{{Key: aws.String("aws:owner"), Value: aws.String("me")}}
		}, "InvalidParameterException"},
		{"client token too long", func(in *ecs.RunTaskInput) { in.ClientToken = aws.String(strings.Repeat("t", 65)) }, "InvalidParameterException"},
		{"client token with a space", func(in *ecs.RunTaskInput) { in.ClientToken = aws.String("a token") }, "InvalidParameterException"},
		{"startedBy with a space", func(in *ecs.RunTaskInput) { in.StartedBy = aws.String("my launcher") }, "InvalidParameterException"},
		{"count above ten", func(in *ecs.RunTaskInput) { in.Count = aws.Int32(11) }, "InvalidParameterException"},
		{"propagate SERVICE tags", func(in *ecs.RunTaskInput) { in.PropagateTags = types.PropagateTagsService }, "InvalidParameterException"},
	}
	for _, c := range cases {
		in := runInput("bad-" + strings.ReplaceAll(c.name, " ", "-"))
		c.change(in)
		_, err := e.ecs.RunTask(context.Background(), in)
		var ae smithy.APIError
		if !errors.As(err, &ae) || ae.ErrorCode() != c.want || ae.ErrorMessage() == "" {
			t.Errorf("%s: RunTask = %v, want %s with a message", c.name, err, c.want)
		}
	}
	// The SDK's own error types come out, not just the codes.
	_, err := e.ecs.RunTask(context.Background(), func() *ecs.RunTaskInput { in := runInput("x"); in.Cluster = aws.String("nope"); return in }())
	var cnf *types.ClusterNotFoundException
	if !errors.As(err, &cnf) {
		t.Errorf("unknown cluster: %T, want *types.ClusterNotFoundException", errors.Unwrap(err))
	}
	_, err = e.ecs.RunTask(context.Background(), func() *ecs.RunTaskInput { in := runInput("y"); in.TaskDefinition = aws.String("nope"); return in }())
	var ce *types.ClientException
	if !errors.As(err, &ce) || ce.ErrorMessage() != "TaskDefinition not found." {
		t.Errorf("unknown task definition: %v, want ClientException: TaskDefinition not found.", err)
	}

	// Bad input loses nothing: no task started, and a good request still works.
	if n := len(e.srv.Tasks()); n != 0 {
		t.Fatalf("%d tasks started by invalid requests", n)
	}
	e.run(t, runInput("good"))
}

func TestServer_RunTask_CapacityProviderStrategy(t *testing.T) {
	t.Parallel()
	e := start(t)
	in := runInput("spot")
	in.LaunchType = ""
	in.CapacityProviderStrategy = []types.CapacityProviderStrategyItem{
		{CapacityProvider: aws.String("FARGATE"), Weight: 1},
		{CapacityProvider: aws.String("FARGATE_SPOT"), Weight: 4},
	}
	task := e.run(t, in)
	if aws.ToString(task.CapacityProviderName) != "FARGATE_SPOT" || task.LaunchType != types.LaunchTypeFargate {
		t.Errorf("capacity provider %q, launch type %q", aws.ToString(task.CapacityProviderName), task.LaunchType)
	}
	plain := runInput("default-strategy")
	plain.LaunchType = ""
	if got := e.run(t, plain); aws.ToString(got.CapacityProviderName) != "FARGATE" {
		t.Errorf("cluster default strategy gave %q, want FARGATE", aws.ToString(got.CapacityProviderName))
	}
}

func TestServer_OtherOperations_InvalidInput(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := context.Background()
	arn := aws.ToString(e.run(t, runInput("known")).TaskArn)
	unknown := "arn:aws:ecs:us-east-1:000000000000:task/sandboxes/0123456789abcdef0123456789abcdef"

	_, err := e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String(unknown)})
	var inv *types.InvalidParameterException
	if !errors.As(err, &inv) || !strings.Contains(inv.ErrorMessage(), "not found") {
		t.Errorf("StopTask of an unknown task = %v, want InvalidParameterException ... not found", err)
	}
	_, err = e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("other"), Task: aws.String(arn)})
	if !errors.As(err, &inv) {
		t.Errorf("StopTask in the wrong cluster = %v, want InvalidParameterException", err)
	}
	_, err = e.ecs.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String("sandboxes"), Task: aws.String("not-a-task")})
	if !errors.As(err, &inv) {
		t.Errorf("StopTask of a malformed id = %v, want InvalidParameterException", err)
	}

	out, err := e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("sandboxes"), Tasks: []string{taskID(arn), unknown}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Tasks) != 1 || aws.ToString(out.Tasks[0].TaskArn) != arn ||
		len(out.Failures) != 1 || aws.ToString(out.Failures[0].Reason) != "MISSING" || aws.ToString(out.Failures[0].Arn) != unknown {
		t.Errorf("DescribeTasks by id and unknown ARN: tasks %d, failures %+v", len(out.Tasks), out.Failures)
	}
	_, err = e.ecs.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String("nope"), Tasks: []string{arn}})
	var cnf *types.ClusterNotFoundException
	if !errors.As(err, &cnf) {
		t.Errorf("DescribeTasks in an unknown cluster = %v", err)
	}
	_, err = e.ecs.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("nope")})
	if !errors.As(err, &cnf) {
		t.Errorf("ListTasks in an unknown cluster = %v", err)
	}
	_, err = e.ecs.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes"), NextToken: aws.String("%%%")})
	if !errors.As(err, &inv) {
		t.Errorf("ListTasks with a bad nextToken = %v", err)
	}
	_, err = e.ecs.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String("nope")})
	var ce *types.ClientException
	if !errors.As(err, &ce) {
		t.Errorf("DescribeTaskDefinition of an unknown family = %v, want ClientException", err)
	}
	if n := len(e.srv.Tasks()); n != 1 {
		t.Errorf("%d live tasks, want the one", n)
	}
}

func TestServer_Protocol_RawRequests(t *testing.T) {
	t.Parallel()
	e := start(t)
	post := func(target, body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.Endpoint()+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		if target != "" {
			req.Header.Set("X-Amz-Target", target)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/x-amz-json-1.1" {
			t.Errorf("Content-Type %q", ct)
		}
		if resp.Header.Get("x-amzn-RequestId") == "" {
			t.Error("no x-amzn-RequestId")
		}
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("response %q is not JSON", b)
		}
		return resp.StatusCode, m
	}
	for _, c := range []struct {
		target, body, wantType string
	}{
		{"AmazonEC2ContainerServiceV20141113.RunTask", "{not json", "SerializationException"},
		{"AmazonEC2ContainerServiceV20141113.RunTask", `{"count": "one"}`, "SerializationException"},
		{"AmazonEC2ContainerServiceV20141113.CreateCluster", "{}", "UnknownOperationException"},
		{"", "{}", "UnknownOperationException"},
	} {
		code, m := post(c.target, c.body)
		if code != http.StatusBadRequest || m["__type"] != c.wantType || m["message"] == "" {
			t.Errorf("%s %q: %d %v, want 400 %s", c.target, c.body, code, m, c.wantType)
		}
	}
	code, m := post("AmazonEC2ContainerServiceV20141113.ListTasks", `{"cluster":"sandboxes"}`)
	if code != http.StatusOK || m["taskArns"] == nil {
		t.Errorf("ListTasks: %d %v", code, m)
	}
	resp, err := http.Get(e.srv.Endpoint() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET / = %d", resp.StatusCode)
	}
}

func TestServer_DescribeTaskDefinition_ReportsTheDefinition(t *testing.T) {
	t.Parallel()
	e := start(t)
	arn2 := e.register(t, ecslocal.TaskDefinition{Port: 8080, CPU: 512, Memory: 1024, StopTimeout: 90 * time.Second,
		Tags: map[string]string{"team": "platform"}})
	out, err := e.ecs.DescribeTaskDefinition(context.Background(), &ecs.DescribeTaskDefinitionInput{
		TaskDefinition: aws.String("sandbox"), Include: []types.TaskDefinitionField{types.TaskDefinitionFieldTags},
	})
	if err != nil {
		t.Fatal(err)
	}
	td := out.TaskDefinition
	if aws.ToString(td.TaskDefinitionArn) != arn2 || td.Revision != 2 || td.NetworkMode != types.NetworkModeAwsvpc ||
		aws.ToString(td.Cpu) != "512" || aws.ToString(td.Memory) != "1024" {
		t.Fatalf("latest revision: %s rev %d mode %s cpu %s memory %s", aws.ToString(td.TaskDefinitionArn), td.Revision,
			td.NetworkMode, aws.ToString(td.Cpu), aws.ToString(td.Memory))
	}
	cd := td.ContainerDefinitions[0]
	if aws.ToString(cd.Name) != "agent" || aws.ToInt32(cd.StopTimeout) != 90 || len(cd.PortMappings) != 1 ||
		aws.ToInt32(cd.PortMappings[0].ContainerPort) != 8080 || len(cd.Environment) != 2 {
		t.Errorf("container definition %+v", cd)
	}
	if !equalMaps(tagMap(out.Tags), map[string]string{"team": "platform"}) {
		t.Errorf("tags %v", tagMap(out.Tags))
	}
	first, err := e.ecs.DescribeTaskDefinition(context.Background(), &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(e.defARN)})
	if err != nil || first.TaskDefinition.Revision != 1 {
		t.Errorf("by ARN: %v, revision %d", err, first.TaskDefinition.Revision)
	}
}

func TestServer_RegisterTaskDefinition_RefusesInvalid(t *testing.T) {
	t.Parallel()
	s := ecslocal.NewServer(t.TempDir())
	good := ecslocal.TaskDefinition{Family: "agent", ContainerName: "agent", Command: []string{"/bin/true"}}
	if _, err := s.RegisterTaskDefinition(good); err != nil {
		t.Fatal(err)
	}
	for name, td := range map[string]ecslocal.TaskDefinition{
		"empty family":        {ContainerName: "agent", Command: []string{"/bin/true"}},
		"family with a slash": {Family: "a/b", ContainerName: "agent", Command: []string{"/bin/true"}},
		"no container name":   {Family: "agent", Command: []string{"/bin/true"}},
		"no command":          {Family: "agent", ContainerName: "agent"},
		"stop timeout > 120s": {Family: "agent", ContainerName: "agent", Command: []string{"/bin/true"}, StopTimeout: 121 * time.Second},
		"bad environment":     {Family: "agent", ContainerName: "agent", Command: []string{"/bin/true"}, Environment: map[string]string{"A=B": "c"}},
		"taken revision":      {Family: "agent", Revision: 1, ContainerName: "agent", Command: []string{"/bin/true"}},
	} {
		if _, err := s.RegisterTaskDefinition(td); !errors.Is(err, ecslocal.ErrInvalidTaskDefinition) {
			t.Errorf("%s: RegisterTaskDefinition = %v, want ErrInvalidTaskDefinition", name, err)
		}
	}
}

func TestServer_Start_RefusesWhatIsNotLoopback(t *testing.T) {
	t.Parallel()
	for name, configure := range map[string]func(*ecslocal.Server){
		"wildcard API address":      func(s *ecslocal.Server) { s.Addr = "0.0.0.0:0" },
		"wildcard metadata address": func(s *ecslocal.Server) { s.MetadataAddr = ":0" },
		"pool outside 127/8":        func(s *ecslocal.Server) { s.AddressPool = netip.MustParsePrefix("10.0.0.0/24") },
		"pool too small":            func(s *ecslocal.Server) { s.AddressPool = netip.MustParsePrefix("127.9.9.0/30") },
		"bad cluster name":          func(s *ecslocal.Server) { s.Clusters = []string{"my cluster"} },
	} {
		s := ecslocal.NewServer(t.TempDir())
		configure(s)
		if err := s.Start(); !errors.Is(err, ecslocal.ErrInvalidConfig) {
			t.Errorf("%s: Start = %v, want ErrInvalidConfig", name, err)
			_ = s.Close(context.Background())
		}
	}
	if err := ecslocal.NewServer("/nonexistent/root").Start(); !errors.Is(err, ecslocal.ErrInvalidConfig) {
		t.Errorf("missing data root: Start = %v, want ErrInvalidConfig", err)
	}
}
