// Package benchreport turns the output of go test -json -bench into
// docs/BENCHMARKS.md: the runs make bench makes, one table per question the project
// answers with them, each with its reproducing command and its goals judged.
package benchreport
