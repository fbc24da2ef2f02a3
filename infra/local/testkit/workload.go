package testkit

import (
	"net"
	"net/http"
	"os"

	"github.com/coder/websocket"
)

// EnvWorkload names the workload a test binary plays when an agent runs it as its
// SANDBOX_COMMAND: TestMain checks it first and serves the workload instead of running
// the tests. The workload's environment is an allowlist, so the variable reaches it
// only when the agent's WORKLOAD_ENV declares it; and the workload, under a uid of its
// own, can run only a copy of the binary that uid may reach.
const EnvWorkload = "SANDGATE_TEST_WORKLOAD"

// WorkloadCrashy names ServeCrashy.
const WorkloadCrashy = "crashy"

// ListenWorkload listens where the agent tells its workload to (HOST and PORT), or
// exits.
func ListenWorkload() net.Listener {
	ln, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT")))
	if err != nil {
		os.Exit(1)
	}
	return ln
}

// ServeCrashy is a workload that greets each connection with {"type":"hello"} and
// echoes its frames, but exits with status 3 on a "crash" frame and closes the
// connection on a "close" frame. It returns only if serving fails.
func ServeCrashy() int {
	_ = http.Serve(ListenWorkload(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_ = c.Write(r.Context(), websocket.MessageText, []byte(`{"type":"hello"}`))
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			switch string(data) {
			case "crash":
				os.Exit(3)
			case "close":
				c.Close(websocket.StatusNormalClosure, "the workload is done with this client")
				return
			}
			_ = c.Write(r.Context(), typ, data)
		}
	}))
	return 1
}
