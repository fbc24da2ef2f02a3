// Package bench holds the benchmarks of the whole application on the local stack
// (relay round trip against a direct echo, connect storm, start overhead, Lambda
// bootstrap size and init, the recovery point of a kill -9 under writes against
// SYNC_INTERVAL), each reported against a baseline measured in the same run; make
// bench runs them and writes docs/BENCHMARKS.md.
package bench
