package ecslocal

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TaskDefinition is a Fargate task definition with one essential container, whose image is
// stood in for by a native command. The local stack builds these from template.yaml.
type TaskDefinition struct {
	// Family and Revision name the definition; Revision 0 registers the family's next one.
	Family   string
	Revision int
	// ContainerName is the container's name, which RunTask overrides refer to.
	ContainerName string
	// Command is the native binary standing in for the image (Command[0], its entrypoint)
	// and its default arguments (Command[1:], the image's CMD). A container override's
	// command replaces the arguments, as it replaces CMD on Fargate.
	Command []string
	// Image is reported as the container's image (default "local/<family>:latest").
	Image string
	// Environment is the container definition's environment.
	Environment map[string]string
	// Port is the container port of the port mapping (0: none).
	Port int
	// StopTimeout is the wait between SIGTERM and SIGKILL (DefaultStopTimeout, at most
	// MaxStopTimeout). Sub-second values are allowed, so tests stay fast.
	StopTimeout time.Duration
	// CPU (units, 1024 per vCPU) and Memory (MiB) of the task (DefaultCPU, DefaultMemory).
	CPU, Memory int
	// Tags of the definition, copied to tasks run with propagateTags TASK_DEFINITION.
	Tags map[string]string

	// TaskRole is the task role's ARN (arn:aws:iam::<account>:role/<name>): what the
	// task's own code may do. The task reaches it only through its credentials endpoint
	// (Server.Sessions issues the sessions), never as keys in its environment.
	TaskRole string
	// ExecutionRole is the execution role's ARN: what ECS itself uses to start the task
	// (pull an ECR image, create the awslogs stream, read Secrets). Fargate requires one
	// when the definition has Secrets, a LogGroup or an ECR image.
	ExecutionRole string
	// Secrets maps a variable of the container's environment to its ValueFrom: a Secrets
	// Manager secret's ARN, optionally followed by :<json-key>:<version-stage>:<version-id>
	// (each may be empty), as ECS documents it. ECS reads them with the execution role
	// when the task starts.
	Secrets map[string]string
	// LogGroup is the awslogs-group of the container's awslogs log configuration ("":
	// none); LogStreamPrefix its awslogs-stream-prefix. The stream of a task is
	// <prefix>/<container>/<task id> (<container>/<task id> without a prefix).
	LogGroup, LogStreamPrefix string

	// User is the container's user ("uid" or "uid:gid"; "" or "0": root, the image's
	// user). Where this process may not change its uid, only its own uid can run.
	User string
	// AddCapabilities and DropCapabilities are the container's
	// LinuxParameters.Capabilities: the process starts with DefaultCapabilities less
	// those dropped ("ALL" drops every one), plus those added (Fargate adds only
	// SYS_PTRACE), as its bounding set. Applied where Server.Isolate can.
	AddCapabilities, DropCapabilities []string
}

type taskDef struct {
	family, container, image string
	revision                 int
	command                  []string
	env                      map[string]string
	port                     int
	stopTimeout              time.Duration
	cpu, memory              int
	tags                     map[string]string
	registeredAt             time.Time
	arn                      string
	taskRole, execRole       string
	secrets                  []secretRef // sorted by variable
	logGroup, logPrefix      string
	uid, gid                 int // the container's user; -1: this process's own
	addCaps, dropCaps        []string
}

// RegisterTaskDefinition registers td and returns its ARN. It may be called before or
// after Start.
func (s *Server) RegisterTaskDefinition(td TaskDefinition) (string, error) {
	if err := validateTaskDefinition(td); err != nil {
		return "", fmt.Errorf("register task definition %q: %w", td.Family, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", fmt.Errorf("register task definition %q: %w", td.Family, ErrClosed)
	}
	if s.defs == nil {
		s.defs = map[string]map[int]*taskDef{}
	}
	revs := s.defs[td.Family]
	if revs == nil {
		revs = map[int]*taskDef{}
		s.defs[td.Family] = revs
	}
	rev := td.Revision
	if rev == 0 {
		rev = latestRevision(revs) + 1
	}
	if _, ok := revs[rev]; ok {
		return "", fmt.Errorf("register task definition %s:%d: %w: revision already registered", td.Family, rev, ErrInvalidTaskDefinition)
	}
	d := &taskDef{
		family: td.Family, revision: rev, container: td.ContainerName,
		image:   cmpOr(td.Image, "local/"+td.Family+":latest"),
		command: slices.Clone(td.Command), env: maps.Clone(td.Environment), port: td.Port,
		stopTimeout: td.StopTimeout, cpu: td.CPU, memory: td.Memory, tags: maps.Clone(td.Tags),
		registeredAt: time.Now(),
		taskRole:     td.TaskRole, execRole: td.ExecutionRole,
		logGroup: td.LogGroup, logPrefix: td.LogStreamPrefix,
		addCaps: slices.Clone(td.AddCapabilities), dropCaps: slices.Clone(td.DropCapabilities),
	}
	d.uid, d.gid, _ = parseUser(td.User) // validated above
	for _, name := range slices.Sorted(maps.Keys(td.Secrets)) {
		ref, _ := parseValueFrom(td.Secrets[name]) // validated above
		ref.name = name
		d.secrets = append(d.secrets, ref)
	}
	if d.stopTimeout == 0 {
		d.stopTimeout = DefaultStopTimeout
	}
	if d.cpu == 0 {
		d.cpu = DefaultCPU
	}
	if d.memory == 0 {
		d.memory = DefaultMemory
	}
	region, account := cmpOr(s.region, cmpOr(s.Region, DefaultRegion)), cmpOr(s.account, cmpOr(s.AccountID, DefaultAccountID))
	d.arn = fmt.Sprintf("arn:aws:ecs:%s:%s:task-definition/%s:%d", region, account, d.family, d.revision)
	revs[rev] = d
	return d.arn, nil
}

func validateTaskDefinition(td TaskDefinition) error {
	var errs []error
	if !validName(td.Family, 255) {
		errs = append(errs, fmt.Errorf("family %q must be 1-255 letters, digits, hyphens or underscores", td.Family))
	}
	if td.Revision < 0 {
		errs = append(errs, fmt.Errorf("revision %d is negative", td.Revision))
	}
	if !validName(td.ContainerName, 255) {
		errs = append(errs, fmt.Errorf("container name %q must be 1-255 letters, digits, hyphens or underscores", td.ContainerName))
	}
	if len(td.Command) == 0 || td.Command[0] == "" {
		errs = append(errs, errors.New("command is empty"))
	}
	if td.StopTimeout < 0 || td.StopTimeout > MaxStopTimeout {
		errs = append(errs, fmt.Errorf("stop timeout %s is outside [0, %s]", td.StopTimeout, MaxStopTimeout))
	}
	if td.Port < 0 || td.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is outside [0, 65535]", td.Port))
	}
	if td.CPU < 0 || td.Memory < 0 {
		errs = append(errs, errors.New("cpu and memory must not be negative"))
	}
	for k := range td.Environment {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			errs = append(errs, fmt.Errorf("environment name %q is not valid", k))
		}
		if credentialVariable(k) {
			errs = append(errs, fmt.Errorf("environment variable %s would give the task static credentials: tasks get their role through the credentials endpoint", k))
		}
	}
	errs = append(errs, validateIdentity(td)...)
	errs = append(errs, validateCapabilities(td.AddCapabilities, td.DropCapabilities)...)
	if _, _, err := parseUser(td.User); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTaskDefinition, err)
	}
	return nil
}

// parseUser reads a container's User: "uid" or "uid:gid", numeric (the stack's images
// name no users); "" is -1, -1 (the process's own user).
func parseUser(user string) (uid, gid int, err error) {
	if user == "" {
		return -1, -1, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	if uid, err = strconv.Atoi(u); err != nil || uid < 0 {
		return 0, 0, fmt.Errorf("user %q is not uid or uid:gid", user)
	}
	gid = uid
	if hasGroup {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return 0, 0, fmt.Errorf("user %q is not uid or uid:gid", user)
		}
	}
	return uid, gid, nil
}

func latestRevision(revs map[int]*taskDef) int {
	latest := 0
	for r := range revs {
		latest = max(latest, r)
	}
	return latest
}

// resolveDefLocked finds a definition by family, family:revision or ARN, as RunTask and
// DescribeTaskDefinition accept them.
func (s *Server) resolveDefLocked(ref string) (*taskDef, bool) {
	if rest, ok := strings.CutPrefix(ref, "arn:"); ok {
		// arn:aws:ecs:<region>:<account>:task-definition/<family>[:<revision>]
		parts := strings.SplitN(rest, ":", 5)
		if len(parts) != 5 || parts[1] != "ecs" || parts[2] != s.region || parts[3] != s.account {
			return nil, false
		}
		name, ok := strings.CutPrefix(parts[4], "task-definition/")
		if !ok {
			return nil, false
		}
		ref = name
	}
	family, revText, hasRev := strings.Cut(ref, ":")
	revs := s.defs[family]
	if len(revs) == 0 {
		return nil, false
	}
	if !hasRev {
		return revs[latestRevision(revs)], true
	}
	rev, err := strconv.Atoi(revText)
	if err != nil {
		return nil, false
	}
	d, ok := revs[rev]
	return d, ok
}

func (d *taskDef) wire() wireTaskDefinition {
	cd := wireContainerDefinition{
		Name: d.container, Image: d.image, Essential: true,
		Environment: envPairs(d.env), PortMappings: []wirePortMapping{},
		StopTimeout: int((d.stopTimeout + time.Second - 1) / time.Second),
	}
	if d.port != 0 {
		cd.PortMappings = append(cd.PortMappings, wirePortMapping{ContainerPort: d.port, HostPort: d.port, Protocol: "tcp"})
	}
	for _, ref := range d.secrets {
		cd.Secrets = append(cd.Secrets, wireSecret{Name: ref.name, ValueFrom: ref.valueFrom})
	}
	if d.logGroup != "" {
		opts := map[string]string{"awslogs-group": d.logGroup, "awslogs-region": d.region()}
		if d.logPrefix != "" {
			opts["awslogs-stream-prefix"] = d.logPrefix
		}
		cd.LogConfiguration = &wireLogConfiguration{LogDriver: "awslogs", Options: opts}
	}
	return wireTaskDefinition{
		TaskDefinitionArn: d.arn, ContainerDefinitions: []wireContainerDefinition{cd},
		Family: d.family, Revision: d.revision, NetworkMode: "awsvpc", Status: "ACTIVE",
		Compatibilities: []string{"EC2", "FARGATE"}, RequiresCompatibilities: []string{"FARGATE"},
		Cpu: strconv.Itoa(d.cpu), Memory: strconv.Itoa(d.memory), RegisteredAt: ts(d.registeredAt),
		TaskRoleArn: d.taskRole, ExecutionRoleArn: d.execRole,
	}
}

// region is the definition's region, from its ARN.
func (d *taskDef) region() string {
	parts := strings.SplitN(d.arn, ":", 5)
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

func envPairs(env map[string]string) []KeyValuePair {
	out := make([]KeyValuePair, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, KeyValuePair{Name: ptr(k), Value: ptr(env[k])})
	}
	return out
}

func tagList(tags map[string]string) []Tag {
	out := make([]Tag, 0, len(tags))
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		out = append(out, Tag{Key: ptr(k), Value: ptr(tags[k])})
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
