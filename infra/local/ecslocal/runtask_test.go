package ecslocal_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/sandgate/sandgate/infra/local/ecslocal"
)

var taskARN = regexp.MustCompile(`^arn:aws:ecs:us-east-1:000000000000:task/sandboxes/[0-9a-f]{32}$`)

func TestServer_RunTask_EachTaskOnItsOwnAddress(t *testing.T) {
	t.Parallel()
	e := start(t)
	const n = 4
	arns := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { arns[i] = aws.ToString(e.run(t, runInput(fmt.Sprintf("token-%d", i))).TaskArn) })
	}
	wg.Wait()

	seen := map[string]bool{}
	for _, arn := range arns {
		if !taskARN.MatchString(arn) {
			t.Errorf("task ARN %q is not in ECS's format", arn)
		}
		task := e.waitStatus(t, arn, "RUNNING")
		ip := privateIP(task)
		addr, err := netip.ParseAddr(ip)
		if err != nil || !e.pool.Contains(addr) || ip == "127.0.0.1" {
			t.Fatalf("privateIPv4Address %q is not a task address of %s", ip, e.pool)
		}
		if seen[ip] {
			t.Fatalf("two live tasks share %s", ip)
		}
		seen[ip] = true
		if nics := task.Containers[0].NetworkInterfaces; len(nics) != 1 || aws.ToString(nics[0].PrivateIpv4Address) != ip {
			t.Errorf("container network interfaces %+v, want %s", nics, ip)
		}
		if a := task.Attachments[0]; aws.ToString(a.Type) != "ElasticNetworkInterface" || aws.ToString(a.Status) != "ATTACHED" {
			t.Errorf("attachment %s %s, want an ATTACHED ElasticNetworkInterface", aws.ToString(a.Type), aws.ToString(a.Status))
		}

		// The process found its address through the metadata endpoint and serves there.
		w := e.whoami(t, ip)
		if w.IP != ip || w.TaskArn != arn {
			t.Fatalf("process on %s says it is %s of %s", ip, w.IP, w.TaskArn)
		}
		var info ecslocal.TaskInfo
		for _, ti := range e.srv.Tasks() {
			if ti.ARN == arn {
				info = ti
			}
		}
		if info.Pid != w.Pid || info.IP.String() != ip || info.DataDir != w.Cwd {
			t.Errorf("Tasks() = %+v; the process reports pid %d, cwd %s", info, w.Pid, w.Cwd)
		}
		b, err := os.ReadFile(filepath.Join(info.DataDir, "hello.txt"))
		if err != nil || string(b) != ip {
			t.Errorf("hello.txt in the data directory = %q, %v", b, err)
		}
	}
}

func TestServer_RunTask_ClientTokenIdempotent(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := context.Background()

	// Racing callers with one token start one task.
	const callers = 8
	arns := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { arns[i] = aws.ToString(e.run(t, runInput("lease-1")).TaskArn) })
	}
	wg.Wait()
	for _, arn := range arns[1:] {
		if arn != arns[0] {
			t.Fatalf("one token started tasks %s and %s", arns[0], arn)
		}
	}
	if n := len(e.srv.Tasks()); n != 1 {
		t.Fatalf("%d live tasks after %d calls with one token, want 1", n, callers)
	}

	// A retry after the task runs returns it as it is now.
	e.waitStatus(t, arns[0], "RUNNING")
	again := e.run(t, runInput("lease-1"))
	if aws.ToString(again.TaskArn) != arns[0] || aws.ToString(again.LastStatus) != "RUNNING" {
		t.Fatalf("retry returned %s %s, want %s RUNNING", aws.ToString(again.TaskArn), aws.ToString(again.LastStatus), arns[0])
	}

	// The same token with other parameters is a conflict naming the task.
	changed := runInput("lease-1")
	changed.StartedBy = aws.String("someone-else")
	_, err := e.ecs.RunTask(ctx, changed)
	var conflict *types.ConflictException
	if !errors.As(err, &conflict) || len(conflict.ResourceIds) != 1 || conflict.ResourceIds[0] != arns[0] {
		t.Fatalf("RunTask with the token and other parameters = %v, want ConflictException naming %s", err, arns[0])
	}

	// Tokens are per cluster.
	other := runInput("lease-1")
	other.Cluster = aws.String("other")
	if arn := aws.ToString(e.run(t, other).TaskArn); arn == arns[0] {
		t.Fatal("the token in another cluster returned the first cluster's task")
	}
	// A new token starts a new task.
	if arn := aws.ToString(e.run(t, runInput("lease-2")).TaskArn); arn == arns[0] {
		t.Fatal("a new token returned the old task")
	}
}

func TestServer_RunTask_TagsAndStartedByRoundTrip(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := context.Background()
	e.register(t, ecslocal.TaskDefinition{Tags: map[string]string{"team": "platform", "sandgate:userId": "from-definition"}})

	in := runInput("tagged")
	in.Tags = []types.Tag{{Key: aws.String("sandgate:userId"), Value: aws.String("user_abc")}}
	in.PropagateTags = types.PropagateTagsTaskDefinition
	in.EnableECSManagedTags = true
	arn := aws.ToString(e.run(t, in).TaskArn)
	plain := e.run(t, func() *ecs.RunTaskInput {
		i := runInput("untagged")
		i.StartedBy = aws.String("other-launcher")
		return i
	}())

	want := map[string]string{"sandgate:userId": "user_abc", "team": "platform", "aws:ecs:clusterName": "sandboxes"}
	tagged := e.describe(t, arn, types.TaskFieldTags)
	if got := tagMap(tagged.Tags); !equalMaps(got, want) {
		t.Errorf("DescribeTasks include TAGS: tags %v, want %v", got, want)
	}
	if got := e.describe(t, arn).Tags; len(got) != 0 {
		t.Errorf("DescribeTasks without include returned tags %v", got)
	}
	lt, err := e.ecs.ListTagsForResource(ctx, &ecs.ListTagsForResourceInput{ResourceArn: aws.String(arn)})
	if err != nil || !equalMaps(tagMap(lt.Tags), want) {
		t.Errorf("ListTagsForResource = %v, %v; want %v", tagMap(lt.Tags), err, want)
	}
	if aws.ToString(tagged.StartedBy) != "sandgate" || aws.ToString(tagged.Group) != "family:sandbox" {
		t.Errorf("startedBy %q, group %q", aws.ToString(tagged.StartedBy), aws.ToString(tagged.Group))
	}

	list, err := e.ecs.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes"), StartedBy: aws.String("sandgate")})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.TaskArns) != 1 || list.TaskArns[0] != arn {
		t.Fatalf("ListTasks startedBy sandgate = %v, want [%s] (not %s)", list.TaskArns, arn, aws.ToString(plain.TaskArn))
	}
	// startedBy must be the only filter.
	_, err = e.ecs.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String("sandboxes"), StartedBy: aws.String("sandgate"), Family: aws.String("sandbox")})
	var inv *types.InvalidParameterException
	if !errors.As(err, &inv) {
		t.Errorf("ListTasks with startedBy and family = %v, want InvalidParameterException", err)
	}
}

func TestServer_RunTask_OverridesReachTheProcess(t *testing.T) {
	t.Parallel()
	e := start(t)
	in := runInput("overrides")
	in.Overrides = &types.TaskOverride{ContainerOverrides: []types.ContainerOverride{{
		Name:    aws.String("agent"),
		Command: []string{"-mode", "serve", "-child=false"},
		Environment: []types.KeyValuePair{
			{Name: aws.String("SANDGATE_USER_ID"), Value: aws.String("user_abc")},
			{Name: aws.String("FROM_DEFINITION"), Value: aws.String("override")},
		},
	}}}
	task := e.run(t, in)
	ip := privateIP(e.waitStatus(t, aws.ToString(task.TaskArn), "RUNNING"))

	for name, want := range map[string]string{
		"SANDGATE_USER_ID":              "user_abc",                        // container override
		"FROM_DEFINITION":               "override",                        // override beats the definition
		"PORT":                          e.port,                            // task definition
		"STACK_ENDPOINT":                "http://127.0.0.1:1",              // the stack's variables
		"AWS_EXECUTION_ENV":             "AWS_ECS_FARGATE",                 // what Fargate injects
		"AWS_REGION":                    "us-east-1",                       //
		"AWS_DEFAULT_REGION":            "us-east-1",                       //
		"HOME":                          "",                                // nothing inherited from the emulator
		"PATH":                          "",                                //
		"ECS_CONTAINER_METADATA_URI_V4": e.srv.MetadataEndpoint() + "/v4/", // prefix, checked below
	} {
		code, body := e.get(t, ip, "/env?name="+name)
		switch {
		case name == "ECS_CONTAINER_METADATA_URI_V4":
			if code != 200 || !regexp.MustCompile(`^`+regexp.QuoteMeta(want)+`[0-9a-f]{32}-[0-9]{10}$`).Match(body) {
				t.Errorf("%s = %q", name, body)
			}
		case want == "":
			if code != 404 {
				t.Errorf("%s is set to %q in the task; the emulator's environment must not leak", name, body)
			}
		case code != 200 || string(body) != want:
			t.Errorf("%s = %d %q, want %q", name, code, body, want)
		}
	}
	if w := e.whoami(t, ip); len(w.Args) != 3 || w.Args[2] != "-child=false" {
		t.Errorf("process arguments %v, want the command override", w.Args)
	}
	got := e.describe(t, aws.ToString(task.TaskArn)).Overrides.ContainerOverrides
	if len(got) != 1 || aws.ToString(got[0].Name) != "agent" || len(got[0].Environment) != 2 {
		t.Errorf("overrides reported as %+v", got)
	}
}

func TestServer_RunTask_LaunchDelayShowsProvisioningAndPending(t *testing.T) {
	t.Parallel()
	e := start(t, func(s *ecslocal.Server) { s.LaunchDelay = 600 * time.Millisecond })
	// Held at the end of its launch, the task is surely seen PENDING before RUNNING.
	release := e.srv.HoldLaunches()
	defer release()
	first := e.run(t, runInput("slow"))
	if aws.ToString(first.LastStatus) != "PROVISIONING" || aws.ToString(first.DesiredStatus) != "RUNNING" {
		t.Fatalf("RunTask returned %s/%s, want PROVISIONING/RUNNING", aws.ToString(first.LastStatus), aws.ToString(first.DesiredStatus))
	}
	if ip := privateIP(first); ip != "" || aws.ToString(first.Attachments[0].Status) != "PRECREATED" {
		t.Fatalf("a PROVISIONING task shows address %q, attachment %s", ip, aws.ToString(first.Attachments[0].Status))
	}

	arn := aws.ToString(first.TaskArn)
	order := []string{aws.ToString(first.LastStatus)}
	var pending types.Task
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		task := e.describe(t, arn)
		st := aws.ToString(task.LastStatus)
		if order[len(order)-1] != st {
			order = append(order, st)
		}
		if st == "PENDING" && pending.TaskArn == nil {
			pending = task
			release()
		}
		if st == "RUNNING" {
			break
		}
	}
	if fmt.Sprint(order) != "[PROVISIONING PENDING RUNNING]" {
		t.Fatalf("states seen %v, want [PROVISIONING PENDING RUNNING]", order)
	}
	if privateIP(pending) == "" || pending.Connectivity != types.ConnectivityConnected {
		t.Errorf("a PENDING task has address %q and connectivity %q", privateIP(pending), pending.Connectivity)
	}
	running := e.describe(t, arn)
	created, pulled, started := aws.ToTime(running.CreatedAt), aws.ToTime(running.PullStoppedAt), aws.ToTime(running.StartedAt)
	if !(created.Before(pulled) && !pulled.After(started) && !aws.ToTime(running.PullStartedAt).After(pulled)) {
		t.Errorf("timestamps out of order: created %v pullStarted %v pullStopped %v started %v",
			created, aws.ToTime(running.PullStartedAt), pulled, started)
	}
	if aws.ToInt64(&running.Version) <= aws.ToInt64(&first.Version) {
		t.Errorf("version %d did not grow from %d", running.Version, first.Version)
	}
}

func TestServer_ListTasks_Paginates(t *testing.T) {
	t.Parallel()
	e := start(t)
	want := map[string]bool{}
	for i := range 5 {
		want[aws.ToString(e.run(t, runInput(fmt.Sprintf("page-%d", i))).TaskArn)] = true
	}
	got := map[string]bool{}
	pages := 0
	p := ecs.NewListTasksPaginator(e.ecs, &ecs.ListTasksInput{Cluster: aws.String("sandboxes"), MaxResults: aws.Int32(2)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, arn := range page.TaskArns {
			if got[arn] {
				t.Fatalf("%s listed twice", arn)
			}
			got[arn] = true
		}
	}
	if pages != 3 || !equalMaps(got, want) {
		t.Fatalf("%d pages listing %d tasks, want 3 pages listing the 5", pages, len(got))
	}
}

func tagMap(tags []types.Tag) map[string]string {
	m := map[string]string{}
	for _, tag := range tags {
		m[aws.ToString(tag.Key)] = aws.ToString(tag.Value)
	}
	return m
}

func equalMaps[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
