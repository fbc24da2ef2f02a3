// Package ecslocal is the local stack's Amazon ECS endpoint: it speaks the ECS JSON 1.1
// protocol for RunTask, DescribeTasks, StopTask and ListTasks as Fargate answers them, runs
// each task as a local process on its own loopback address, and serves each task's task
// metadata endpoint v4. Switchable faults let tests rehearse throttling, lost capacity and
// crashing tasks.
package ecslocal
