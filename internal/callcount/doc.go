// Package callcount counts the AWS API calls a client makes, per service and operation,
// with a smithy middleware, so benchmarks and tests report measured calls, not read ones.
package callcount
