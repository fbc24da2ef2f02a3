// Package sandboxtest wires the real local emulators (DynamoDB Local, ecslocal, the API
// Gateway emulator) for tests that call the route handlers directly, in process.
package sandboxtest
