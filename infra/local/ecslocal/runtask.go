package ecslocal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/logging"
)

// tokenEntry remembers what a RunTask clientToken started, for idempotent retries.
type tokenEntry struct {
	params  []byte // the request without its token, canonically encoded
	taskIDs []string
	at      time.Time
}

// runPlan is a validated RunTask request.
type runPlan struct {
	def                          *taskDef
	count                        int
	launchType, capacityProvider string
	subnet                       string
	group, startedBy             string
	enableExec                   bool
	overrides                    wireTaskOverride
	argv                         []string
	overrideEnv                  []KeyValuePair
	dropped                      []string // credential variables left out of overrideEnv
	taskRole, execRole           string   // the definition's, or the overrides'
	cpu, memory                  string
	tags                         []Tag
	params                       []byte
}

func (s *Server) runTask(ctx context.Context, in *RunTaskRequest) (any, *APIError) {
	s.mu.Lock()
	if s.faults.runTaskErr != "" && takeCount(&s.faults.runTaskErrCount) {
		s.mu.Unlock()
		return nil, faultError(s.faults.runTaskErr)
	}
	if s.closed {
		s.mu.Unlock()
		return nil, apiErr(ServerException, "ecslocal is shutting down")
	}
	if !s.limits.call(time.Now()) {
		s.mu.Unlock()
		return nil, throttledError()
	}
	s.purgeLocked(time.Now())
	cluster, e := s.clusterLocked(in.Cluster)
	if e != nil {
		s.mu.Unlock()
		return nil, e
	}
	plan, e := s.planLocked(cluster, in)
	if e != nil {
		s.mu.Unlock()
		return nil, e
	}
	// Idempotency is per cluster: the same token and parameters return what the first
	// call started; the same token with other parameters is a conflict.
	token := deref(in.ClientToken)
	key := cluster + "\x00" + token
	if out, e, done := s.replayLocked(key, token, plan); done {
		s.mu.Unlock()
		return out, e
	}
	s.mu.Unlock()
	for _, name := range plan.dropped {
		s.log.Warn("credential variable of the overrides kept out of the task's environment: tasks get their role through the credentials endpoint", logVariable, name)
	}

	// Each task's roles are assumed now, outside the lock (the trust decision may take
	// a while): a role ECS may not assume refuses the call, as it does on AWS.
	ids := make([]string, plan.count)
	idents := make([]*taskIdentity, plan.count)
	revoke := func(from int) {
		for _, ident := range idents[from:] {
			s.revokeIdentity(ident)
		}
	}
	for i := range ids {
		ids[i] = randomHex(32)
		ident, e := s.issueIdentity(ctx, ids[i], plan.taskRole, plan.execRole)
		if e != nil {
			revoke(0)
			return nil, e
		}
		idents[i] = ident
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		revoke(0)
		return nil, apiErr(ServerException, "ecslocal is shutting down")
	}
	// A retry with the same token may have started the tasks meanwhile.
	if out, e, done := s.replayLocked(key, token, plan); done {
		revoke(0)
		return out, e
	}
	now := time.Now()
	// Fargate's launch rate: the call's tasks all start, or none (no token for them).
	if !s.limits.launch(plan.count, now) {
		revoke(0)
		return nil, throttledError()
	}
	out := runTaskResponse{Tasks: []wireTask{}, Failures: []wireFailure{}}
	refuse := takeCount(&s.faults.capacityCount)
	var started []string
	for i := range plan.count {
		if refuse || (s.faults.maxTasks > 0 && s.liveLocked() >= s.faults.maxTasks) {
			s.revokeIdentity(idents[i])
			out.Failures = append(out.Failures, wireFailure{Reason: CapacityUnavailableReason})
			continue
		}
		t, ok := s.newTaskLocked(cluster, plan, now, ids[i], idents[i])
		if !ok {
			s.revokeIdentity(idents[i])
			out.Failures = append(out.Failures, wireFailure{Reason: CapacityUnavailableReason, Detail: "no free address in " + s.pool.prefix.String()})
			continue
		}
		started = append(started, t.id)
		out.Tasks = append(out.Tasks, s.wireLocked(t, true))
	}
	if token != "" && len(started) > 0 {
		s.tokens[key] = &tokenEntry{params: plan.params, taskIDs: started, at: now}
	}
	return out, nil
}

// replayLocked answers a RunTask whose clientToken already started tasks in the cluster:
// those tasks for the same parameters, a conflict for others. done is false for a new token.
func (s *Server) replayLocked(key, token string, plan *runPlan) (out any, e *APIError, done bool) {
	entry, ok := s.tokens[key]
	if !ok || token == "" {
		return nil, nil, false
	}
	arns := make([]string, 0, len(entry.taskIDs))
	for _, id := range entry.taskIDs {
		arns = append(arns, s.tasks[id].arn)
	}
	if !bytes.Equal(entry.params, plan.params) {
		return nil, &APIError{Type: ConflictException, ResourceIDs: arns,
			Message: "The clientToken is already in use with a different RunTask request. Retry with a unique clientToken, or with the original parameters."}, true
	}
	res := runTaskResponse{Tasks: []wireTask{}, Failures: []wireFailure{}}
	for _, id := range entry.taskIDs {
		res.Tasks = append(res.Tasks, s.wireLocked(s.tasks[id], true))
	}
	return res, nil, true
}

func faultError(t ErrorType) *APIError {
	switch t {
	case ThrottlingException:
		return apiErr(t, "Rate exceeded")
	case ServerException:
		return apiErr(t, "Service Unavailable. Please try again later.")
	}
	return apiErr(t, "injected fault")
}

func (s *Server) liveLocked() int {
	n := 0
	for _, t := range s.tasks {
		if t.lastStatus != statusStopped {
			n++
		}
	}
	return n
}

func (s *Server) newTaskLocked(cluster string, p *runPlan, now time.Time, id string, ident *taskIdentity) (*task, bool) {
	ip, ok := s.pool.take()
	if !ok {
		return nil, false
	}
	t := &task{
		ident: ident,
		id:    id, cluster: cluster, clusterArn: s.clusterARN(cluster),
		arn:              fmt.Sprintf("arn:aws:ecs:%s:%s:task/%s/%s", s.region, s.account, cluster, id),
		def:              p.def,
		startedBy:        p.startedBy,
		group:            p.group,
		launchType:       p.launchType,
		capacityProvider: p.capacityProvider,
		enableExec:       p.enableExec,
		overrides:        p.overrides,
		argv:             p.argv,
		overrideEnv:      p.overrideEnv,
		cpu:              p.cpu, memory: p.memory,
		subnet: p.subnet, ip: ip,
		eniID:        "eni-" + randomHex(17),
		mac:          macFor(ip),
		attachmentID: newUUID(),
		imageDigest:  "sha256:" + randomHex(64),
		dataDir:      dataDirFor(s.dataRoot, id),
		crash:        takeCount(&s.faults.crashCount),
		stop:         make(chan struct{}),
		done:         make(chan struct{}),
		tags:         p.tags,
		lastStatus:   statusProvisioning, desiredStatus: statusRunning,
		attachStatus: attachPrecreated, containerStatus: statusPending,
		createdAt: now, version: 1,
	}
	t.containerArn = fmt.Sprintf("arn:aws:ecs:%s:%s:container/%s/%s/%s", s.region, s.account, cluster, id, newUUID())
	t.dockerID = dockerIDFor(id)
	t.metadataURI = s.metadataEndpoint() + "/v4/" + t.dockerID
	s.tasks[id] = t
	if ident != nil && ident.credID != "" {
		s.creds[ident.credID] = t
	}
	s.log.Info("task state", logging.TaskARN, t.arn, logging.State, statusProvisioning)
	s.emitLocked(t)
	s.wg.Add(1)
	go s.lifecycle(t, s.faults.launchDelay)
	return t, true
}

// planLocked validates a RunTask request as ECS does where it matters to a Fargate launcher.
func (s *Server) planLocked(cluster string, in *RunTaskRequest) (*runPlan, *APIError) {
	p := &runPlan{count: 1, startedBy: deref(in.StartedBy), enableExec: in.EnableExecuteCommand}
	if in.Count != nil {
		p.count = int(*in.Count)
		if p.count < 1 || p.count > 10 {
			return nil, invalid("count must be between 1 and 10.")
		}
	}
	if tok := deref(in.ClientToken); !printable(tok) || len(tok) > 64 {
		return nil, invalid("clientToken must be at most 64 ASCII characters in the range 33-126.")
	}
	if p.startedBy != "" && !validStartedBy(p.startedBy) {
		return nil, invalid("startedBy may hold up to 128 letters, numbers, hyphens, forward slashes and underscores.")
	}
	if e := p.placement(in); e != nil {
		return nil, e
	}
	ref := deref(in.TaskDefinition)
	if ref == "" {
		return nil, invalid("TaskDefinition can not be blank.")
	}
	def, ok := s.resolveDefLocked(ref)
	if !ok {
		return nil, apiErr(ClientException, "TaskDefinition not found.")
	}
	p.def = def
	p.group = cmpOr(deref(in.Group), "family:"+def.family)
	if len(p.group) > 255 {
		return nil, invalid("group must be at most 255 characters.")
	}
	if e := p.network(in.NetworkConfiguration); e != nil {
		return nil, e
	}
	if e := p.override(in.Overrides); e != nil {
		return nil, e
	}
	if e := p.tagging(in, cluster); e != nil {
		return nil, e
	}
	canon := *in
	canon.ClientToken = nil
	params, err := json.Marshal(canon)
	if err != nil {
		return nil, apiErr(ServerException, "encode request: %v", err)
	}
	p.params = params
	return p, nil
}

func (p *runPlan) placement(in *RunTaskRequest) *APIError {
	if in.LaunchType != "" && len(in.CapacityProviderStrategy) > 0 {
		return invalid("Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.")
	}
	switch pv := deref(in.PlatformVersion); pv {
	case "", "LATEST", "1.4.0":
	default:
		return invalid("The specified platform version (%s) does not exist; Fargate Linux offers LATEST and 1.4.0.", pv)
	}
	p.launchType = "FARGATE"
	switch in.LaunchType {
	case "", "FARGATE":
	case "EC2", "EXTERNAL", "MANAGED_INSTANCES":
		return invalid("launch type %s has no capacity here: ecslocal runs Fargate tasks only.", in.LaunchType)
	default:
		return invalid("launchType %q is not one of EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES.", in.LaunchType)
	}
	if in.LaunchType == "FARGATE" {
		return nil
	}
	strategy := in.CapacityProviderStrategy
	if len(strategy) == 0 {
		// The cluster's default strategy (template.yaml: FARGATE, weight 1).
		p.capacityProvider = "FARGATE"
		return nil
	}
	if len(strategy) > 20 {
		return invalid("capacityProviderStrategy can hold at most 20 capacity providers.")
	}
	best, positive := -1, false
	for i, item := range strategy {
		name := deref(item.CapacityProvider)
		if name != "FARGATE" && name != "FARGATE_SPOT" {
			return invalid("The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster: %q.", name)
		}
		if item.Weight < 0 || item.Weight > 1000 || item.Base < 0 || item.Base > 100000 {
			return invalid("capacity provider weight must be in [0, 1000] and base in [0, 100000].")
		}
		positive = positive || item.Weight > 0
		switch {
		case best < 0, item.Base > strategy[best].Base,
			item.Base == strategy[best].Base && item.Weight > strategy[best].Weight:
			best = i
		}
	}
	if len(strategy) > 1 && !positive {
		return invalid("At least one capacity provider in the strategy must have a weight greater than zero.")
	}
	p.capacityProvider = deref(strategy[best].CapacityProvider)
	return nil
}

func (p *runPlan) network(nc *NetworkConfiguration) *APIError {
	if nc == nil || nc.AwsvpcConfiguration == nil {
		return invalid("Network Configuration must be provided when networkMode 'awsvpc' is specified.")
	}
	vpc := nc.AwsvpcConfiguration
	if len(vpc.Subnets) == 0 {
		return invalid("subnets can not be empty.")
	}
	if len(vpc.Subnets) > 16 {
		return invalid("subnets can have at most 16 items.")
	}
	for _, sn := range vpc.Subnets {
		if !strings.HasPrefix(sn, "subnet-") || len(sn) <= len("subnet-") {
			return invalid("Error retrieving subnet information for [%s]: The subnet ID '%s' is malformed", sn, sn)
		}
	}
	if len(vpc.SecurityGroups) > 5 {
		return invalid("securityGroups can have at most 5 items.")
	}
	for _, sg := range vpc.SecurityGroups {
		if !strings.HasPrefix(sg, "sg-") || len(sg) <= len("sg-") {
			return invalid("Error retrieving security group information for [%s]: The security group '%s' is malformed", sg, sg)
		}
	}
	switch vpc.AssignPublicIP {
	case "", "ENABLED", "DISABLED":
	default:
		return invalid("assignPublicIp %q is not ENABLED or DISABLED.", vpc.AssignPublicIP)
	}
	p.subnet = vpc.Subnets[0]
	return nil
}

// maxOverrides is ECS's limit on the encoded overrides, formatting included.
const maxOverrides = 8192

func (p *runPlan) override(o *TaskOverride) *APIError {
	p.argv = p.def.command
	p.taskRole, p.execRole = p.def.taskRole, p.def.execRole
	p.cpu, p.memory = strconv.Itoa(p.def.cpu), strconv.Itoa(p.def.memory)
	merged := wireContainerOverride{Name: p.def.container}
	p.overrides = wireTaskOverride{InferenceAcceleratorOverrides: []struct{}{}}
	if o != nil {
		b, _ := json.Marshal(o)
		if len(b) > maxOverrides {
			return invalid("Container Overrides length must be at most %d.", maxOverrides)
		}
		for _, co := range o.ContainerOverrides {
			name := deref(co.Name)
			if name != p.def.container {
				return invalid("Override for container named %s is not a container in the TaskDefinition.", name)
			}
			for _, kv := range co.Environment {
				if n := deref(kv.Name); n == "" || strings.ContainsAny(n, "=\x00") {
					return invalid("environment variable name %q is not valid.", n)
				}
			}
			if len(co.Command) > 0 {
				merged.Command = co.Command
				p.argv = append([]string{p.def.command[0]}, co.Command...)
			}
			merged.Environment = append(merged.Environment, co.Environment...)
			for _, kv := range co.Environment {
				if credentialVariable(deref(kv.Name)) {
					p.dropped = append(p.dropped, deref(kv.Name))
					continue
				}
				p.overrideEnv = append(p.overrideEnv, kv)
			}
		}
		for _, r := range []struct {
			arn       *string
			dst, echo *string
		}{{o.TaskRoleArn, &p.taskRole, &p.overrides.TaskRoleArn}, {o.ExecutionRoleArn, &p.execRole, &p.overrides.ExecutionRoleArn}} {
			if v := deref(r.arn); v != "" {
				if !roleARN.MatchString(v) {
					return invalid("Role ARN %q is not valid.", v)
				}
				*r.dst, *r.echo = v, v
			}
		}
		if v := deref(o.Cpu); v != "" {
			if _, err := strconv.Atoi(v); err != nil {
				return invalid("cpu override %q is not a number of CPU units.", v)
			}
			p.cpu, p.overrides.Cpu = v, v
		}
		if v := deref(o.Memory); v != "" {
			if _, err := strconv.Atoi(v); err != nil {
				return invalid("memory override %q is not a number of MiB.", v)
			}
			p.memory, p.overrides.Memory = v, v
		}
	}
	p.overrides.ContainerOverrides = []wireContainerOverride{merged}
	return nil
}

func (p *runPlan) tagging(in *RunTaskRequest, cluster string) *APIError {
	if len(in.Tags) > 50 {
		return invalid("Tags can have at most 50 items.")
	}
	tags := map[string]string{}
	switch in.PropagateTags {
	case "", "NONE":
	case "TASK_DEFINITION":
		for k, v := range p.def.tags {
			tags[k] = v
		}
	case "SERVICE":
		return invalid("propagateTags SERVICE applies to tasks a service starts, not to RunTask.")
	default:
		return invalid("propagateTags %q is not one of TASK_DEFINITION, SERVICE, NONE.", in.PropagateTags)
	}
	for _, t := range in.Tags {
		k, v := deref(t.Key), deref(t.Value)
		if k == "" || len(k) > 128 || len(v) > 256 {
			return invalid("Tag keys must be 1-128 characters and values at most 256.")
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return invalid("Tag keys beginning with 'aws:' are reserved.")
		}
		tags[k] = v
	}
	if in.EnableECSManagedTags {
		tags["aws:ecs:clusterName"] = cluster
	}
	p.tags = tagList(tags)
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}

func validStartedBy(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/') {
			return false
		}
	}
	return true
}
