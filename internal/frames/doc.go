// Package frames defines the platform frames sandgate itself sends to a client: JSON
// objects whose "type" starts with "sandgate.". Every other frame is the workload's own
// and passes through untouched in both directions.
package frames
