// Package config reads a process's configuration from its environment, once, at
// start-up. It records every variable read, so tests can check that template.yaml sets
// each one a function reads, and it reports every problem at once.
package config
