// Package taskevents is the TaskEvents function's logic: ECS task state changes of the
// sandbox cluster (an EventBridge rule) end a dead sandbox's lease and give its capacity
// slot back once its task has really stopped, and tell its clients at once.
package taskevents
