// Package upstream carries one client connection to the workload: one WebSocket per
// client connection, client frames written in the order they were queued, and every
// frame the workload sends handed, in order, to a poster (the management API).
package upstream
