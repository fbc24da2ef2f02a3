// Package templatecheck holds the tests that hold template.yaml to its contracts: the
// functions it names exist and build, routes reach them, every variable a function reads
// is set, each role grants exactly what its function needs, and cfn-lint accepts it.
package templatecheck
