// Command task stands in for the sandbox agent in ecslocal's tests. Like the agent, it
// learns its address from the task metadata endpoint v4, serves HTTP there and writes into
// its working directory. Modes:
//
//	serve        serve until SIGTERM, then exit 0 ("graceful exit" on stdout)
//	ignore-term  serve and ignore SIGTERM ("sigterm ignored"), so only SIGKILL stops it
//	exit         exit at once with -code
//	sleep        sleep forever (the child started by -child)
//
// -child starts a child process in the same process group, to prove the whole group goes.
//
// While it serves, /whoami says who the process is, /status is its /proc/self/status,
// /fetch?url= GETs a URL and /dial?addr= opens a TCP connection from inside the task
// (both answer what happened as JSON), /env?name= reads one variable,
// /environ lists the variables' names (never their values) and /sts calls STS
// GetCallerIdentity with the AWS SDK's default credential chain, as the agent does: the
// credentials come from wherever the environment points the SDK. TEST_CREDENTIALS_EXPIRY_WINDOW
// (a duration) sets the SDK's credentials cache expiry window.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/sandgate/sandgate/internal/awsconf"
)

type network struct {
	NetworkMode   string   `json:"NetworkMode"`
	IPv4Addresses []string `json:"IPv4Addresses"`
}

type container struct {
	DockerID string            `json:"DockerId"`
	Labels   map[string]string `json:"Labels"`
	Networks []network         `json:"Networks"`
}

type taskMeta struct {
	TaskARN    string      `json:"TaskARN"`
	Containers []container `json:"Containers"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "task:", err)
		os.Exit(2)
	}
}

func run() error {
	mode := flag.String("mode", "serve", "serve, ignore-term, exit or sleep")
	code := flag.Int("code", 0, "exit code in exit mode")
	child := flag.Bool("child", false, "start a child process in the same group")
	flag.Parse()
	if *mode == "sleep" {
		signal.Ignore(syscall.SIGTERM)
		for {
			time.Sleep(time.Hour)
		}
	}

	uri := os.Getenv("ECS_CONTAINER_METADATA_URI_V4")
	if uri == "" {
		return errors.New("ECS_CONTAINER_METADATA_URI_V4 is not set")
	}
	var c container
	if err := getJSON(uri, &c); err != nil {
		return err
	}
	var tm taskMeta
	if err := getJSON(uri+"/task", &tm); err != nil {
		return err
	}
	if len(c.Networks) == 0 || len(c.Networks[0].IPv4Addresses) == 0 {
		return errors.New("container metadata has no address")
	}
	ip := c.Networks[0].IPv4Addresses[0]
	if tm.TaskARN == "" || tm.TaskARN != c.Labels["com.amazonaws.ecs.task-arn"] {
		return fmt.Errorf("task metadata names task %q, container metadata %q", tm.TaskARN, c.Labels["com.amazonaws.ecs.task-arn"])
	}
	if err := os.WriteFile("hello.txt", []byte(ip), 0o600); err != nil {
		return err
	}
	if *mode == "exit" {
		fmt.Println("exiting", *code)
		os.Exit(*code)
	}

	childPid := 0
	if *child {
		cmd := exec.Command(os.Args[0], "-mode", "sleep")
		if err := cmd.Start(); err != nil {
			return err
		}
		childPid = cmd.Process.Pid
	}

	// SIGTERM is caught before anything is served: a test stops the task as soon as it
	// answers, and the default action would end it before it could say so.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)

	port := os.Getenv("PORT")
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
	if err != nil {
		return err
	}
	cwd, _ := os.Getwd()
	mux := http.NewServeMux()
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"ip": ip, "pid": os.Getpid(), "cwd": cwd, "taskArn": tm.TaskARN, "childPid": childPid, "args": os.Args[1:],
		})
	})
	// /proc/self/status's capability bounding set and ids, as the kernel sees them.
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write(b)
	})
	// /fetch?url= GETs url from inside the task and says what came back.
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{}
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(r.URL.Query().Get("url"))
		if err != nil {
			out["error"] = err.Error()
		} else {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			out["status"], out["body"] = resp.StatusCode, string(b)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	// /dial?addr= opens a TCP connection from inside the task and says whether it could.
	mux.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]any{}
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 2*time.Second)
		if err != nil {
			out["error"] = err.Error()
		} else {
			c.Close()
			out["connected"] = true
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, v)
	})
	mux.HandleFunc("/environ", func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for _, kv := range os.Environ() {
			name, _, _ := strings.Cut(kv, "=")
			names = append(names, name)
		}
		sort.Strings(names)
		_ = json.NewEncoder(w).Encode(names)
	})
	var sdk awsClient
	mux.HandleFunc("/sts", func(w http.ResponseWriter, r *http.Request) {
		out, err := sdk.callerIdentity(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Println("serving on", ln.Addr())

	for range sigs {
		if *mode == "ignore-term" {
			fmt.Println("sigterm ignored")
			continue
		}
		fmt.Println("sigterm")
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
		fmt.Println("graceful exit")
		return nil
	}
	return nil
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// awsClient is one SDK configuration for the process's life, loaded on first use, so its
// credentials cache behaves as a long-running workload's does.
type awsClient struct {
	once sync.Once
	cfg  aws.Config
	err  error
}

type identity struct {
	Arn         string `json:"arn"`
	UserID      string `json:"userId"`
	Account     string `json:"account"`
	AccessKeyID string `json:"accessKeyId"`
	Source      string `json:"source"`
}

func (c *awsClient) callerIdentity(ctx context.Context) (identity, error) {
	c.once.Do(func() {
		var opts []func(*config.LoadOptions) error
		if v := os.Getenv("TEST_CREDENTIALS_EXPIRY_WINDOW"); v != "" {
			window, err := time.ParseDuration(v)
			if err != nil {
				c.err = err
				return
			}
			opts = append(opts, config.WithCredentialsCacheOptions(func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = window }))
		}
		c.cfg, c.err = awsconf.Load(ctx, opts...)
	})
	if c.err != nil {
		return identity{}, c.err
	}
	creds, err := c.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return identity{}, err
	}
	out, err := sts.NewFromConfig(c.cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return identity{}, err
	}
	return identity{Arn: aws.ToString(out.Arn), UserID: aws.ToString(out.UserId), Account: aws.ToString(out.Account),
		AccessKeyID: creds.AccessKeyID, Source: creds.Source}, nil
}
