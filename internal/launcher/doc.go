// Package launcher starts, finds and stops sandbox tasks on ECS Fargate: one task per
// user, RunTask idempotent on the lease token, failures turned into typed errors.
package launcher
