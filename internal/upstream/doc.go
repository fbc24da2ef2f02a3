// Package upstream carries one client connection to the workload: one WebSocket per
// client connection, client frames written in the order they were queued, and every
// frame the workload sends handed, in order, to a poster (the management API).
//
// A frame counts as written once it is on the upstream's socket: frames the workload had
// not read when it crashed are lost with it, and a restarted workload is redialled and
// greets the client again.
package upstream
