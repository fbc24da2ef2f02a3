package taskevents

import (
	"github.com/sandgate/sandgate/internal/taskenv"
)

// The event the rule delivers (EventBridge's envelope is aws-lambda-go's
// events.CloudWatchEvent; aws-lambda-go has no type for ECS task state changes).
const (
	// Source and DetailType identify an ECS task state change.
	Source     = "aws.ecs"
	DetailType = "ECS Task State Change"
)

// ECS task states and stop codes the handler acts on.
const (
	StatusStopped = "STOPPED"
	// StopTaskFailedToStart: the task never ran (image pull, secrets, network).
	StopTaskFailedToStart = "TaskFailedToStart"
	// StopEssentialContainerExited: the agent's container exited (for any reason:
	// the agent's own stop exits too).
	StopEssentialContainerExited = "EssentialContainerExited"
)

// Detail is the part of an ECS Task State Change event's detail the handler reads. The
// detail is the task as DescribeTasks describes it, with ISO 8601 timestamps and
// without tags (ECS does not put them in events), so the user and generation come
// from the container overrides the launcher set (taskenv), the same values it tags the
// task with.
type Detail struct {
	ClusterArn        string      `json:"clusterArn"`
	TaskArn           string      `json:"taskArn"`
	TaskDefinitionArn string      `json:"taskDefinitionArn"`
	LastStatus        string      `json:"lastStatus"`
	DesiredStatus     string      `json:"desiredStatus"`
	StopCode          string      `json:"stopCode"`
	StoppedReason     string      `json:"stoppedReason"`
	StartedBy         string      `json:"startedBy"`
	Group             string      `json:"group"`
	Containers        []Container `json:"containers"`
	Overrides         Overrides   `json:"overrides"`
	// Version increases with every change of the task; a redelivered event repeats it.
	Version int64 `json:"version"`
}

// Container is one container of the task.
type Container struct {
	Name       string `json:"name"`
	LastStatus string `json:"lastStatus"`
	ExitCode   *int   `json:"exitCode"`
	Reason     string `json:"reason"`
}

// Overrides are the task's overrides, as RunTask gave them.
type Overrides struct {
	ContainerOverrides []ContainerOverride `json:"containerOverrides"`
}

// ContainerOverride is one container's overrides.
type ContainerOverride struct {
	Name        string     `json:"name"`
	Environment []KeyValue `json:"environment"`
}

// KeyValue is an environment variable.
type KeyValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// env returns the value of variable name in the overrides ("" when absent).
func (d *Detail) env(name string) string {
	for _, o := range d.Overrides.ContainerOverrides {
		for _, kv := range o.Environment {
			if kv.Name == name {
				return kv.Value
			}
		}
	}
	return ""
}

// UserID is the user the launcher started the task for ("" for a task it did not).
func (d *Detail) UserID() string { return d.env(taskenv.UserID) }

// Generation is the lease generation the task was started for, as written in its
// overrides ("" when absent).
func (d *Detail) Generation() string { return d.env(taskenv.Generation) }

// PoolID is the pool item of a warm pool task ("" for a user's task): such a task
// names no user in its overrides; its claim item does once it is claimed.
func (d *Detail) PoolID() string { return d.env(taskenv.PoolID) }

// LeaseToken is the lease token the task was started with ("" when absent). It is
// what tells a launch of the record's lease from a stale or duplicate one; never log
// it.
func (d *Detail) LeaseToken() string { return d.env(taskenv.LeaseToken) }
