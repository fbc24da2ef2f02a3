package ecslocal

import (
	"strconv"
	"time"
)

// The request shapes below mirror the ECS API's JSON member names (checked against the
// schemas of aws-sdk-go-v2/service/ecs v1.105.1). They are exported because Requests
// returns them decoded, so a launcher test can assert exactly what it sent. Members the
// endpoint does not act on are still decoded, so the record is complete.

// KeyValuePair is an environment variable.
type KeyValuePair struct {
	Name  *string `json:"name,omitempty"`
	Value *string `json:"value,omitempty"`
}

// Tag is a resource tag.
type Tag struct {
	Key   *string `json:"key,omitempty"`
	Value *string `json:"value,omitempty"`
}

// CapacityProviderStrategyItem is one entry of RunTask's capacityProviderStrategy.
type CapacityProviderStrategyItem struct {
	CapacityProvider *string `json:"capacityProvider,omitempty"`
	Weight           int32   `json:"weight,omitempty"`
	Base             int32   `json:"base,omitempty"`
}

// AwsVpcConfiguration is the awsvpc network configuration of a task.
type AwsVpcConfiguration struct {
	Subnets        []string `json:"subnets,omitempty"`
	SecurityGroups []string `json:"securityGroups,omitempty"`
	AssignPublicIP string   `json:"assignPublicIp,omitempty"`
}

// NetworkConfiguration wraps the awsvpc configuration.
type NetworkConfiguration struct {
	AwsvpcConfiguration *AwsVpcConfiguration `json:"awsvpcConfiguration,omitempty"`
}

// ContainerOverride overrides one container of the task definition.
type ContainerOverride struct {
	Name              *string        `json:"name,omitempty"`
	Command           []string       `json:"command,omitempty"`
	Environment       []KeyValuePair `json:"environment,omitempty"`
	Cpu               *int32         `json:"cpu,omitempty"`
	Memory            *int32         `json:"memory,omitempty"`
	MemoryReservation *int32         `json:"memoryReservation,omitempty"`
}

// TaskOverride is RunTask's overrides member.
type TaskOverride struct {
	ContainerOverrides []ContainerOverride `json:"containerOverrides,omitempty"`
	Cpu                *string             `json:"cpu,omitempty"`
	Memory             *string             `json:"memory,omitempty"`
	ExecutionRoleArn   *string             `json:"executionRoleArn,omitempty"`
	TaskRoleArn        *string             `json:"taskRoleArn,omitempty"`
}

// RunTaskRequest is the input of RunTask.
type RunTaskRequest struct {
	CapacityProviderStrategy []CapacityProviderStrategyItem `json:"capacityProviderStrategy,omitempty"`
	ClientToken              *string                        `json:"clientToken,omitempty"`
	Cluster                  *string                        `json:"cluster,omitempty"`
	Count                    *int32                         `json:"count,omitempty"`
	EnableECSManagedTags     bool                           `json:"enableECSManagedTags,omitempty"`
	EnableExecuteCommand     bool                           `json:"enableExecuteCommand,omitempty"`
	Group                    *string                        `json:"group,omitempty"`
	LaunchType               string                         `json:"launchType,omitempty"`
	NetworkConfiguration     *NetworkConfiguration          `json:"networkConfiguration,omitempty"`
	Overrides                *TaskOverride                  `json:"overrides,omitempty"`
	PlatformVersion          *string                        `json:"platformVersion,omitempty"`
	PropagateTags            string                         `json:"propagateTags,omitempty"`
	ReferenceID              *string                        `json:"referenceId,omitempty"`
	StartedBy                *string                        `json:"startedBy,omitempty"`
	Tags                     []Tag                          `json:"tags,omitempty"`
	TaskDefinition           *string                        `json:"taskDefinition,omitempty"`
}

// DescribeTasksRequest is the input of DescribeTasks.
type DescribeTasksRequest struct {
	Cluster *string  `json:"cluster,omitempty"`
	Tasks   []string `json:"tasks,omitempty"`
	Include []string `json:"include,omitempty"`
}

// StopTaskRequest is the input of StopTask.
type StopTaskRequest struct {
	Cluster *string `json:"cluster,omitempty"`
	Task    *string `json:"task,omitempty"`
	Reason  *string `json:"reason,omitempty"`
}

// ListTasksRequest is the input of ListTasks.
type ListTasksRequest struct {
	Cluster           *string `json:"cluster,omitempty"`
	ContainerInstance *string `json:"containerInstance,omitempty"`
	Family            *string `json:"family,omitempty"`
	NextToken         *string `json:"nextToken,omitempty"`
	MaxResults        *int32  `json:"maxResults,omitempty"`
	StartedBy         *string `json:"startedBy,omitempty"`
	ServiceName       *string `json:"serviceName,omitempty"`
	DesiredStatus     string  `json:"desiredStatus,omitempty"`
	LaunchType        string  `json:"launchType,omitempty"`
}

// ListTagsForResourceRequest is the input of ListTagsForResource.
type ListTagsForResourceRequest struct {
	ResourceArn *string `json:"resourceArn,omitempty"`
}

// DescribeTaskDefinitionRequest is the input of DescribeTaskDefinition.
type DescribeTaskDefinitionRequest struct {
	TaskDefinition *string  `json:"taskDefinition,omitempty"`
	Include        []string `json:"include,omitempty"`
}

// Response shapes: only what the endpoint fills in, with ECS's member names.

type epoch time.Time

// MarshalJSON writes epoch seconds with milliseconds, the awsJson timestamp format.
func (t epoch) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)), nil
}

func ts(t time.Time) *epoch {
	if t.IsZero() {
		return nil
	}
	e := epoch(t)
	return &e
}

type wireFailure struct {
	Arn    string `json:"arn,omitempty"`
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
}

type wireNetworkInterface struct {
	AttachmentID       string `json:"attachmentId,omitempty"`
	PrivateIpv4Address string `json:"privateIpv4Address,omitempty"`
}

type wireContainer struct {
	ContainerArn      string                 `json:"containerArn"`
	TaskArn           string                 `json:"taskArn"`
	Name              string                 `json:"name"`
	Image             string                 `json:"image"`
	ImageDigest       string                 `json:"imageDigest,omitempty"`
	RuntimeID         string                 `json:"runtimeId,omitempty"`
	LastStatus        string                 `json:"lastStatus"`
	ExitCode          *int                   `json:"exitCode,omitempty"`
	Reason            string                 `json:"reason,omitempty"`
	NetworkBindings   []struct{}             `json:"networkBindings"`
	NetworkInterfaces []wireNetworkInterface `json:"networkInterfaces"`
	HealthStatus      string                 `json:"healthStatus"`
	Cpu               string                 `json:"cpu"`
}

type wireAttachment struct {
	ID      string         `json:"id"`
	Type    string         `json:"type"`
	Status  string         `json:"status"`
	Details []KeyValuePair `json:"details"`
}

type wireEphemeralStorage struct {
	SizeInGiB int `json:"sizeInGiB"`
}

type wireContainerOverride struct {
	Name        string         `json:"name"`
	Command     []string       `json:"command,omitempty"`
	Environment []KeyValuePair `json:"environment,omitempty"`
}

type wireTaskOverride struct {
	ContainerOverrides            []wireContainerOverride `json:"containerOverrides"`
	InferenceAcceleratorOverrides []struct{}              `json:"inferenceAcceleratorOverrides"`
	Cpu                           string                  `json:"cpu,omitempty"`
	Memory                        string                  `json:"memory,omitempty"`
	TaskRoleArn                   string                  `json:"taskRoleArn,omitempty"`
	ExecutionRoleArn              string                  `json:"executionRoleArn,omitempty"`
}

type wireTask struct {
	Attachments             []wireAttachment     `json:"attachments"`
	Attributes              []KeyValuePair       `json:"attributes"`
	AvailabilityZone        string               `json:"availabilityZone"`
	CapacityProviderName    string               `json:"capacityProviderName,omitempty"`
	ClusterArn              string               `json:"clusterArn"`
	Connectivity            string               `json:"connectivity,omitempty"`
	ConnectivityAt          *epoch               `json:"connectivityAt,omitempty"`
	Containers              []wireContainer      `json:"containers"`
	Cpu                     string               `json:"cpu"`
	CreatedAt               *epoch               `json:"createdAt"`
	DesiredStatus           string               `json:"desiredStatus"`
	EnableExecuteCommand    bool                 `json:"enableExecuteCommand"`
	ExecutionStoppedAt      *epoch               `json:"executionStoppedAt,omitempty"`
	Group                   string               `json:"group"`
	HealthStatus            string               `json:"healthStatus"`
	LastStatus              string               `json:"lastStatus"`
	LaunchType              string               `json:"launchType"`
	Memory                  string               `json:"memory"`
	Overrides               wireTaskOverride     `json:"overrides"`
	PlatformVersion         string               `json:"platformVersion"`
	PlatformFamily          string               `json:"platformFamily"`
	PullStartedAt           *epoch               `json:"pullStartedAt,omitempty"`
	PullStoppedAt           *epoch               `json:"pullStoppedAt,omitempty"`
	StartedAt               *epoch               `json:"startedAt,omitempty"`
	StartedBy               string               `json:"startedBy,omitempty"`
	StopCode                string               `json:"stopCode,omitempty"`
	StoppedAt               *epoch               `json:"stoppedAt,omitempty"`
	StoppedReason           string               `json:"stoppedReason,omitempty"`
	StoppingAt              *epoch               `json:"stoppingAt,omitempty"`
	Tags                    []Tag                `json:"tags,omitempty"`
	TaskArn                 string               `json:"taskArn"`
	TaskDefinitionArn       string               `json:"taskDefinitionArn"`
	Version                 int64                `json:"version"`
	EphemeralStorage        wireEphemeralStorage `json:"ephemeralStorage"`
	FargateEphemeralStorage wireEphemeralStorage `json:"fargateEphemeralStorage"`
}

type runTaskResponse struct {
	Tasks    []wireTask    `json:"tasks"`
	Failures []wireFailure `json:"failures"`
}

type describeTasksResponse struct {
	Tasks    []wireTask    `json:"tasks"`
	Failures []wireFailure `json:"failures"`
}

type stopTaskResponse struct {
	Task wireTask `json:"task"`
}

type listTasksResponse struct {
	TaskArns  []string `json:"taskArns"`
	NextToken string   `json:"nextToken,omitempty"`
}

type listTagsResponse struct {
	Tags []Tag `json:"tags"`
}

type wirePortMapping struct {
	ContainerPort int    `json:"containerPort"`
	HostPort      int    `json:"hostPort"`
	Protocol      string `json:"protocol"`
}

type wireContainerDefinition struct {
	Name         string            `json:"name"`
	Image        string            `json:"image"`
	Cpu          int               `json:"cpu"`
	PortMappings []wirePortMapping `json:"portMappings"`
	Essential    bool              `json:"essential"`
	Environment  []KeyValuePair    `json:"environment"`
	StopTimeout  int               `json:"stopTimeout,omitempty"`
	// Secrets and LogConfiguration name where values come from, never the values.
	Secrets          []wireSecret          `json:"secrets,omitempty"`
	LogConfiguration *wireLogConfiguration `json:"logConfiguration,omitempty"`
}

type wireSecret struct {
	Name      string `json:"name"`
	ValueFrom string `json:"valueFrom"`
}

type wireLogConfiguration struct {
	LogDriver string            `json:"logDriver"`
	Options   map[string]string `json:"options"`
}

type wireTaskDefinition struct {
	TaskDefinitionArn       string                    `json:"taskDefinitionArn"`
	ContainerDefinitions    []wireContainerDefinition `json:"containerDefinitions"`
	Family                  string                    `json:"family"`
	NetworkMode             string                    `json:"networkMode"`
	Revision                int                       `json:"revision"`
	Status                  string                    `json:"status"`
	Compatibilities         []string                  `json:"compatibilities"`
	RequiresCompatibilities []string                  `json:"requiresCompatibilities"`
	Cpu                     string                    `json:"cpu"`
	Memory                  string                    `json:"memory"`
	RegisteredAt            *epoch                    `json:"registeredAt"`
	TaskRoleArn             string                    `json:"taskRoleArn,omitempty"`
	ExecutionRoleArn        string                    `json:"executionRoleArn,omitempty"`
}

type describeTaskDefinitionResponse struct {
	TaskDefinition wireTaskDefinition `json:"taskDefinition"`
	Tags           []Tag              `json:"tags,omitempty"`
}

type wireError struct {
	Type        ErrorType `json:"__type"`
	Message     string    `json:"message"`
	ResourceIDs []string  `json:"resourceIds,omitempty"`
}
