// Package ecslocal is the local stack's ECS endpoint: RunTask, DescribeTasks, StopTask and ListTasks as
// Fargate answers them, each task a local process on its own loopback address with its metadata endpoint v4.
// With an identity.Authority and an Authorizer it checks and authorises every call as ECS does, and gives each
// task what Fargate gives it: its task role through a credentials endpoint only, its Secrets read with its
// execution role, its image pull and awslogs stream authorised with that role. With Isolate it keeps tasks
// apart as Fargate's micro-VMs do, as far as the machine allows (isolation.go): network and PID namespaces,
// the metadata and credentials endpoints at 169.254.170.2 inside, a bounding set, cgroups and a workload uid
// per task. With Events set it sends each task state change as ECS sends it to EventBridge (events.go).
package ecslocal
