// Package pool keeps the warm pool full: the pool function's handler launches pool
// tasks up to the pool's size within ECS's rates and the capacity limit, and drains
// those too old or of a task definition other than the current one.
package pool
