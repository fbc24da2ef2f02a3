// Package ecslocal is the local stack's ECS endpoint: RunTask, DescribeTasks, StopTask and ListTasks as
// Fargate answers them, each task a local process on its own loopback address with its metadata endpoint v4.
package ecslocal
