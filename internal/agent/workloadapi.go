package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sandgate/sandgate/internal/apiproxy"
	"github.com/sandgate/sandgate/internal/logging"
)

// What the agent serves its workload on loopback, and the variables that tell the
// workload where (docs/WORKLOADS.md is the contract):
//
//   - one reverse proxy per declared upstream (internal/apiproxy) at
//     SANDGATE_UPSTREAM_<NAME>_URL: the workload's SDK points its base URL there, and
//     the agent adds the team's key, which the workload never holds;
//   - the activity endpoint at SANDGATE_ACTIVITY_URL: a POST says the workload is
//     busy, and counts as activity as a client's frame does, so a long task with no
//     client keeps the sandbox awake (up to MAX_LIFETIME); SANDGATE_SLEEP_AFTER, in
//     seconds, is how long one POST keeps it so.
//
// A model call in flight through a proxy counts as busy too.
const (
	EnvWorkloadActivityURL = "SANDGATE_ACTIVITY_URL"
	EnvWorkloadSleepAfter  = "SANDGATE_SLEEP_AFTER"
	// ActivityPath is the activity endpoint's path.
	ActivityPath = "/v1/activity"
)

// Log keys of the workload API.
const logUpstreams = "upstreams"

// workloadAPI is the loopback servers the agent runs for its workload.
type workloadAPI struct {
	servers []*http.Server
	wg      sync.WaitGroup
	// env tells the workload where they are: NAME=value.
	env []string
	// inFlight counts upstream calls whose answer is not done.
	inFlight atomic.Int64
}

// startWorkloadAPI listens for the workload: the activity endpoint and one proxy per
// upstream, each on a loopback port of its own (SDKs take a base URL, not a path).
func (s *sandbox) startWorkloadAPI() error {
	w := &workloadAPI{}
	s.wapi = w
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+ActivityPath, func(rw http.ResponseWriter, r *http.Request) {
		s.touch()
		rw.WriteHeader(http.StatusNoContent)
	})
	url, err := w.serve(mux, s.log)
	if err != nil {
		return err
	}
	w.env = append(w.env, EnvWorkloadActivityURL+"="+url+ActivityPath,
		EnvWorkloadSleepAfter+"="+strconv.Itoa(int(s.cfg.SleepAfter/time.Second)))
	var names []string
	for _, u := range s.cfg.Upstreams {
		p := &apiproxy.Proxy{Upstream: u, Ledger: s.agent.SpendLedger, Log: s.log, Now: s.now,
			Busy: func(d int) {
				w.inFlight.Add(int64(d))
				// The end of a long call is activity: the idle timer starts from it.
				s.touch()
			}}
		if s.agent.UpstreamTransport != nil {
			p.Transport = s.agent.UpstreamTransport
		}
		url, err := w.serve(p, s.log)
		if err != nil {
			w.close()
			return err
		}
		w.env = append(w.env, apiproxy.WorkloadVar(u.Name)+"="+url)
		names = append(names, u.Name)
	}
	if len(names) > 0 {
		s.log.Info("upstream proxies listening", logUpstreams, names)
	}
	return nil
}

// serve serves h on a free loopback port and returns its base URL.
func (w *workloadAPI) serve(h http.Handler, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the workload: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// No write timeout: a streamed model answer may take minutes.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	w.servers = append(w.servers, srv)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("workload api server failed", logging.Error, err.Error())
		}
	}()
	return "http://" + ln.Addr().String(), nil
}

// busy reports whether an upstream call is in flight.
func (w *workloadAPI) busy() bool { return w != nil && w.inFlight.Load() > 0 }

// close stops the servers once the workload has stopped (nothing is left to answer).
func (w *workloadAPI) close() {
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range w.servers {
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	}
	w.wg.Wait()
}
