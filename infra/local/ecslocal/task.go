package ecslocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
	"github.com/sandgate/sandgate/infra/local/proc"
	"github.com/sandgate/sandgate/internal/logging"
)

// Task and container states as Fargate reports them. ACTIVATING and DEACTIVATING only
// appear for tasks behind load balancers or service registries, so standalone tasks skip
// them, as on Fargate.
const (
	statusProvisioning   = "PROVISIONING"
	statusPending        = "PENDING"
	statusRunning        = "RUNNING"
	statusStopping       = "STOPPING"
	statusDeprovisioning = "DEPROVISIONING"
	statusStopped        = "STOPPED"
)

// ENI attachment states.
const (
	attachPrecreated = "PRECREATED"
	attachAttached   = "ATTACHED"
	attachDetached   = "DETACHED"
	attachDeleted    = "DELETED"
)

// Stop codes and the reasons Fargate gives with them.
const (
	stopUser          = "UserInitiated"
	stopExited        = "EssentialContainerExited"
	stopFailedToStart = "TaskFailedToStart"

	reasonUserDefault = "Task stopped by user"
	reasonExited      = "Essential container in task exited"
)

type task struct {
	// Fixed at RunTask.
	id, arn, cluster, clusterArn string
	def                          *taskDef
	startedBy, group             string
	launchType, capacityProvider string
	enableExec                   bool
	overrides                    wireTaskOverride
	argv                         []string
	overrideEnv                  []KeyValuePair
	cpu, memory                  string
	subnet                       string
	ip                           netip.Addr
	eniID, mac, attachmentID     string
	containerArn, dockerID       string
	imageDigest                  string
	dataDir, metadataURI         string
	crash                        bool
	ident                        *taskIdentity // nil without roles

	// Set by the lifecycle before the process starts, read by it afterwards.
	workloadUID, workloadGID uint32   // 0: none given
	sandbox                  *sandbox // nil when not isolated

	stop chan struct{} // closed when the desired status turns STOPPED
	done chan struct{} // closed when the lifecycle has ended (STOPPED)

	// Guarded by Server.mu.
	tags                                        []Tag
	lastStatus, desiredStatus                   string
	attachStatus, containerStatus, connectivity string
	createdAt, connectivityAt                   time.Time
	pullStartedAt, pullStoppedAt, startedAt     time.Time
	stoppingAt, executionStoppedAt, stoppedAt   time.Time
	stopCode, stoppedReason, containerReason    string
	exitCode                                    *int
	version                                     int64
	pid                                         int
	netns                                       string // while the sandbox stands
	environ                                     []string
}

// setStatusLocked moves the task to status and bumps its version, as ECS does on every
// state change.
func (s *Server) setStatusLocked(t *task, status string) {
	changed := t.lastStatus != status
	if changed {
		t.lastStatus = status
		s.log.Info("task state", logging.TaskARN, t.arn, logging.State, status)
	}
	t.version++
	if changed {
		s.emitLocked(t)
	}
}

// requestStopLocked sets the desired status to STOPPED; the lifecycle does the rest. A task
// already on its way down keeps its first stop code and reason, as on ECS.
func (s *Server) requestStopLocked(t *task, now time.Time, code, reason string) {
	if t.desiredStatus == statusStopped {
		return
	}
	t.desiredStatus = statusStopped
	t.stopCode, t.stoppedReason = code, reason
	if t.lastStatus == statusRunning {
		t.stoppingAt = now
	}
	t.version++
	s.log.Info("task stop requested", logging.TaskARN, t.arn, logging.Reason, reason)
	s.emitLocked(t)
	close(t.stop)
}

// lifecycle drives one task from PROVISIONING to STOPPED.
func (s *Server) lifecycle(t *task, delay time.Duration) {
	defer s.wg.Done()
	defer close(t.done)

	if !sleep(t, delay/2) {
		s.deprovision(t)
		return
	}
	s.mu.Lock()
	now := time.Now()
	t.attachStatus, t.connectivity, t.connectivityAt, t.pullStartedAt = attachAttached, "CONNECTED", now, now
	s.setStatusLocked(t, statusPending)
	s.mu.Unlock()
	if !sleep(t, delay-delay/2) || !s.launchHeld(t) {
		s.deprovision(t)
		return
	}

	p, crashed, failure := s.startContainer(t)
	switch {
	case failure != "":
		s.mu.Lock()
		s.requestStopLocked(t, time.Now(), stopFailedToStart, failure)
		t.containerReason, t.containerStatus = failure, statusStopped
		s.mu.Unlock()
		s.deprovision(t)
		return
	case crashed:
		s.exited(t, 1, true)
		s.deprovision(t)
		return
	case p == nil: // stopped while it was starting
		s.exited(t, 0, false)
		s.deprovision(t)
		return
	}

	select {
	case <-p.Done():
	case <-t.stop:
		s.mu.Lock()
		s.setStatusLocked(t, statusStopping)
		s.mu.Unlock()
		// docker stop signals the container's PID 1 only; the rest of the container dies
		// with it below, when the group is killed.
		if err := signalLeader(p, syscall.SIGTERM); err != nil {
			s.log.Warn("task not signalled", logging.TaskARN, t.arn, logging.Error, err.Error())
		}
		timer := time.NewTimer(t.def.stopTimeout)
		select {
		case <-p.Done():
		case <-timer.C:
			s.log.Warn("task ignored SIGTERM; killing it", logging.TaskARN, t.arn, logging.Duration, t.def.stopTimeout.Milliseconds())
		case <-s.hurry:
		}
		timer.Stop()
	}
	// Kill whatever else runs in the group, as Fargate tears the whole container down.
	code := exitCode(p.Stop(0))
	s.exited(t, code, true)
	s.deprovision(t)
}

// sleep waits d unless the task is stopped first, and reports whether it is still wanted.
func sleep(t *task, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-t.stop:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-t.stop:
		return false
	}
}

// startContainer does what ECS does with the execution role (the registry's auth, the
// Secrets, the image pull, the awslogs stream), pulls (checks the binary), makes the data
// directory and starts the process. It returns the process; or crashed when a crash fault
// stands in for it; or the Fargate stopped reason of a failed start; or none of these
// when the task was stopped while it was starting.
func (s *Server) startContainer(t *task) (p *proc.Process, crashed bool, failure string) {
	ctx, cancel := s.taskContext(t)
	defer cancel()
	var (
		secrets    map[string]string
		principal  *identity.Principal
		dropOutput bool
	)
	if needsExecutionRole(t) {
		c, pr, err := s.executionSession(ctx, t)
		if err != nil {
			return nil, false, stoppedOr(t, reasonExecResources+"unable to assume the task execution role: "+err.Error())
		}
		principal = pr
		if secrets, failure = s.retrieveExecutionResources(ctx, t, c, pr); failure != "" {
			return nil, false, stoppedOr(t, failure)
		}
		if failure = s.pullImage(ctx, t, pr); failure != "" {
			return nil, false, stoppedOr(t, failure)
		}
	}
	if _, err := os.Stat(t.argv[0]); err != nil {
		return nil, false, fmt.Sprintf("CannotPullContainerError: pull image %s: %v", t.def.image, err)
	}
	s.mu.Lock()
	t.pullStoppedAt = time.Now()
	t.version++
	stopped := t.desiredStatus == statusStopped
	s.mu.Unlock()
	if stopped {
		return nil, false, ""
	}
	if principal != nil {
		if dropOutput, failure = s.validateLogger(ctx, t, principal); failure != "" {
			return nil, false, stoppedOr(t, failure)
		}
	}
	if failure = s.giveWorkloadIDs(t); failure != "" {
		return nil, false, failure
	}
	s.mu.Lock()
	env := s.environLocked(t, secrets)
	t.environ = env
	info := s.infoLocked(t)
	output := s.output
	iso := s.iso
	s.mu.Unlock()
	if err := makeTaskDir(t); err != nil {
		return nil, false, fmt.Sprintf("ResourceInitializationError: create task storage: %v", err)
	}
	if t.crash {
		s.mu.Lock()
		s.markRunningLocked(t, 0)
		s.mu.Unlock()
		return nil, true, ""
	}
	start := proc.Start
	if iso != nil && iso.namespaces {
		sb, err := s.isolate(t, env)
		if err != nil {
			return nil, false, fmt.Sprintf("ResourceInitializationError: isolate the task: %v", err)
		}
		t.sandbox, start = sb, sb.start
		s.mu.Lock()
		t.netns = sb.netnsID()
		s.mu.Unlock()
	}

	var w io.Writer
	if output != nil && !dropOutput {
		w = output(info)
	}
	if w == nil {
		w = io.Discard
	}
	cmd := exec.Command(t.argv[0], t.argv[1:]...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = t.dataDir, env, w, w
	cmd.WaitDelay = DefaultWaitDelay
	if uid, gid := t.def.uid, t.def.gid; uid >= 0 && iso != nil && iso.users && uid != os.Geteuid() {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	}
	p, err := start(cmd)
	if err != nil {
		return nil, false, fmt.Sprintf("CannotStartContainerError: %v", err)
	}
	s.mu.Lock()
	s.markRunningLocked(t, p.Pid())
	s.mu.Unlock()
	s.log.Info("task process started", logging.TaskARN, t.arn, logPid, p.Pid(), logAddress, t.ip.String())
	return p, false, ""
}

// taskContext is a context that ends when t is stopped (or the server is in a hurry to
// close), for what ECS asks of other services while t starts.
func (s *Server) taskContext(t *task) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-t.stop:
		case <-s.hurry:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// stoppedOr is the failure of a start step, or none when the task was stopped meanwhile
// (the step failed because its context ended).
func stoppedOr(t *task, failure string) string {
	select {
	case <-t.stop:
		return ""
	default:
		return failure
	}
}

func (s *Server) markRunningLocked(t *task, pid int) {
	t.pid = pid
	t.startedAt = time.Now()
	t.containerStatus = statusRunning
	s.setStatusLocked(t, statusRunning)
}

// exited records the container's end. ran says whether the process ran (and so has an
// exit code); a task stopped before starting has none.
func (s *Server) exited(t *task, code int, ran bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if ran {
		t.exitCode = &code
		s.log.Info("task process exited", logging.TaskARN, t.arn, logExitCode, code)
	}
	if t.desiredStatus != statusStopped {
		s.requestStopLocked(t, now, stopExited, reasonExited)
	}
	if t.stoppingAt.IsZero() {
		t.stoppingAt = now
	}
	t.executionStoppedAt = now
	t.containerStatus = statusStopped
	t.pid = 0
	s.setStatusLocked(t, statusStopping)
}

// deprovision releases what the task held: its storage, then its address.
func (s *Server) deprovision(t *task) {
	s.mu.Lock()
	now := time.Now()
	if t.stoppingAt.IsZero() {
		t.stoppingAt = now
	}
	t.containerStatus = statusStopped
	t.attachStatus = attachDetached
	t.pid = 0
	s.setStatusLocked(t, statusDeprovisioning)
	keep := s.keepDirs
	if t.ident != nil {
		delete(s.creds, t.ident.credID)
	}
	s.mu.Unlock()
	// The task's credentials die with it: the endpoint forgets its id, and every key it
	// was ever given is refused from now on.
	s.revokeIdentity(t.ident)

	if t.sandbox != nil {
		s.mu.Lock()
		t.netns = ""
		s.mu.Unlock()
		if err := t.sandbox.close(); err != nil {
			s.log.Warn("task isolation not wholly torn down", logging.TaskARN, t.arn, logging.Error, err.Error())
		}
	}
	if !keep {
		if err := os.RemoveAll(t.dataDir); err != nil {
			s.log.Warn("task storage not removed", logging.TaskARN, t.arn, logging.Error, err.Error())
		}
	}
	if t.workloadUID >= idBase {
		killUser(t.workloadUID)
		releaseWorkloadID(t.workloadUID)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.pool.release(t.ip)
	t.attachStatus = attachDeleted
	t.stoppedAt = time.Now()
	if t.stopCode == stopUser {
		// The StopTask API reference: "Any tags associated with the task will be deleted."
		t.tags = nil
	}
	s.setStatusLocked(t, statusStopped)
}

// environLocked is the process environment: the stack's variables, what Fargate injects,
// the task definition's, the overrides', the secrets, the metadata endpoint and the
// credentials endpoint, later ones winning. No variable carrying credentials reaches it
// but the credentials endpoint's own.
func (s *Server) environLocked(t *task, secrets map[string]string) []string {
	env := maps.Clone(s.env)
	if env == nil {
		env = map[string]string{}
	}
	env["AWS_EXECUTION_ENV"] = "AWS_ECS_FARGATE"
	env["AWS_REGION"] = s.region
	env["AWS_DEFAULT_REGION"] = s.region
	maps.Copy(env, t.def.env)
	for _, kv := range t.overrideEnv {
		env[deref(kv.Name)] = deref(kv.Value)
	}
	maps.Copy(env, secrets)
	env["ECS_CONTAINER_METADATA_URI_V4"] = s.taskMetadataURILocked(t)
	for k := range credentialVariables {
		delete(env, k)
	}
	if t.ident != nil && t.ident.credID != "" {
		k, v := s.credentialsEnv(t)
		env[k] = v
	}
	if t.workloadUID != 0 {
		env[s.uidVar] = strconv.FormatUint(uint64(t.workloadUID), 10)
		env[s.gidVar] = strconv.FormatUint(uint64(t.workloadGID), 10)
	}
	out := make([]string, 0, len(env))
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func signalLeader(p *proc.Process, sig syscall.Signal) error {
	select {
	case <-p.Done():
		return nil
	default:
	}
	if err := syscall.Kill(p.Pid(), sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d: %w", p.Pid(), err)
	}
	return nil
}

// exitCode is the container exit code Docker would report: the status, or 128 plus the
// signal that killed the process.
func exitCode(err error) int {
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 255
}

// wireLocked renders the task as DescribeTasks returns it.
func (s *Server) wireLocked(t *task, withTags bool) wireTask {
	attached := t.lastStatus != statusProvisioning
	details := []KeyValuePair{{Name: ptr("subnetId"), Value: ptr(t.subnet)}}
	var nics []wireNetworkInterface
	if attached {
		details = append(details,
			KeyValuePair{Name: ptr("networkInterfaceId"), Value: ptr(t.eniID)},
			KeyValuePair{Name: ptr("macAddress"), Value: ptr(t.mac)},
			KeyValuePair{Name: ptr("privateDnsName"), Value: ptr(privateDNSName(t.ip, s.region))},
			KeyValuePair{Name: ptr("privateIPv4Address"), Value: ptr(t.ip.String())},
		)
		nics = []wireNetworkInterface{{AttachmentID: t.attachmentID, PrivateIpv4Address: t.ip.String()}}
	}
	c := wireContainer{
		ContainerArn: t.containerArn, TaskArn: t.arn, Name: t.def.container, Image: t.def.image,
		LastStatus: t.containerStatus, ExitCode: t.exitCode, Reason: t.containerReason,
		NetworkBindings: []struct{}{}, NetworkInterfaces: nics, HealthStatus: "UNKNOWN", Cpu: "0",
	}
	if nics == nil {
		c.NetworkInterfaces = []wireNetworkInterface{}
	}
	if !t.pullStoppedAt.IsZero() {
		c.ImageDigest = t.imageDigest
	}
	if !t.startedAt.IsZero() {
		c.RuntimeID = t.dockerID
	}
	w := wireTask{
		Attachments:      []wireAttachment{{ID: t.attachmentID, Type: "ElasticNetworkInterface", Status: t.attachStatus, Details: details}},
		Attributes:       []KeyValuePair{{Name: ptr("ecs.cpu-architecture"), Value: ptr(cpuArchitecture())}},
		AvailabilityZone: s.zone, CapacityProviderName: t.capacityProvider, ClusterArn: t.clusterArn,
		Connectivity: t.connectivity, ConnectivityAt: ts(t.connectivityAt), Containers: []wireContainer{c},
		Cpu: t.cpu, CreatedAt: ts(t.createdAt), DesiredStatus: t.desiredStatus, EnableExecuteCommand: t.enableExec,
		ExecutionStoppedAt: ts(t.executionStoppedAt), Group: t.group, HealthStatus: "UNKNOWN",
		LastStatus: t.lastStatus, LaunchType: t.launchType, Memory: t.memory, Overrides: t.overrides,
		PlatformVersion: "1.4.0", PlatformFamily: "Linux",
		PullStartedAt: ts(t.pullStartedAt), PullStoppedAt: ts(t.pullStoppedAt), StartedAt: ts(t.startedAt),
		StartedBy: t.startedBy, StopCode: t.stopCode, StoppedAt: ts(t.stoppedAt), StoppedReason: t.stoppedReason,
		StoppingAt: ts(t.stoppingAt), TaskArn: t.arn, TaskDefinitionArn: t.def.arn, Version: t.version,
		EphemeralStorage: wireEphemeralStorage{SizeInGiB: 20}, FargateEphemeralStorage: wireEphemeralStorage{SizeInGiB: 20},
	}
	if withTags {
		w.Tags = slices.Clone(t.tags)
	}
	return w
}

// privateDNSName is the ENI's name in the form AWS gives it. It does not resolve here: the
// agent must take its address from the metadata's IPv4Addresses, as it should on Fargate.
func privateDNSName(ip netip.Addr, region string) string {
	return "ip-" + strings.ReplaceAll(ip.String(), ".", "-") + "." + dnsDomain(region)
}

func dnsDomain(region string) string {
	if region == "us-east-1" {
		return "ec2.internal"
	}
	return region + ".compute.internal"
}

func cpuArchitecture() string {
	if runtime.GOARCH == "amd64" {
		return "x86_64"
	}
	return runtime.GOARCH
}

// macFor derives a locally administered MAC address from the task's address.
func macFor(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("0a:%s:%02x:%02x:%02x:%02x", randomHex(2), b[0], b[1], b[2], b[3])
}

func dockerIDFor(taskID string) string {
	n := make([]byte, 0, 10)
	for _, c := range randomHex(10) {
		n = append(n, byte('0'+strings.IndexRune("0123456789abcdef", c)%10))
	}
	return taskID + "-" + string(n)
}

func dataDirFor(root, taskID string) string { return filepath.Join(root, taskID) }

// giveWorkloadIDs picks the uid and gid the task's workload runs under, when the
// server names variables for them: ids of the task's own where this process is root
// and isolates tasks, else this process's own (with which the agent runs its workload
// as itself, isolating nothing; Start said so).
func (s *Server) giveWorkloadIDs(t *task) (failure string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.uidVar == "" || s.iso == nil:
	case s.iso.users:
		id, ok := takeWorkloadID()
		if !ok {
			return fmt.Sprintf("ResourceInitializationError: no workload uid left: this process runs %d isolated tasks", idsPerProcess)
		}
		t.workloadUID, t.workloadGID = id, id
	default:
		t.workloadUID, t.workloadGID = uint32(os.Geteuid()), uint32(os.Getegid())
	}
	return ""
}

// makeTaskDir makes the task's directory, the container's root and working directory:
// its user's (root's, unless the definition names another) and, when the task has a
// workload gid of its own, that group's only (0710), so no other task's workload may
// enter it; else searchable by every uid (0711), as the workload, under whichever uid,
// must reach its workspace inside.
func makeTaskDir(t *task) error {
	owner, group, mode := -1, -1, os.FileMode(0o711)
	if t.def.uid > 0 && os.Geteuid() == 0 {
		owner, group = t.def.uid, t.def.gid
	}
	if t.workloadGID >= idBase {
		group, mode = int(t.workloadGID), 0o710
	}
	if err := os.Mkdir(t.dataDir, mode); err != nil {
		return err
	}
	if owner >= 0 || group >= 0 {
		if err := os.Chown(t.dataDir, owner, group); err != nil {
			return err
		}
	}
	return os.Chmod(t.dataDir, mode)
}
