// Package connect is the Connect function's logic: on $connect it records the connection
// and ensures the sandbox, then tells the client what happens through a notice it sends
// itself; it also ensures sandboxes for the Message function, which may not start them.
package connect
