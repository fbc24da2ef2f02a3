package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"time"
)

// samEnvFile is the env-vars file's name under the local stack's root (stack.SAMEnvFile).
const samEnvFile = "sam-env.json"

// applyEnvVars sets in vars what a SAM CLI env-vars file gives the function: the
// "Parameters" object for every function, then the function's own object (by logical
// id), each only for a variable the template declares — SAM CLI's rule, so what works
// here works under sam local invoke. It returns the names the file set that the template
// does not declare.
func applyEnvVars(path, logicalID string, vars map[string]string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no %s: make dev writes it while the local stack runs (start it in another terminal)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("read env-vars: %w", err)
	}
	var file map[string]map[string]string
	if err := json.Unmarshal(raw, &file); err != nil {
		return nil, fmt.Errorf("env-vars %s: want {\"Parameters\"|\"<LogicalId>\": {\"NAME\": \"value\"}}: %w", path, err)
	}
	if _, ok := file[logicalID]; !ok {
		return nil, fmt.Errorf("env-vars %s has no entry for %s", path, logicalID)
	}
	var ignored []string
	for _, scope := range []string{"Parameters", logicalID} {
		for k, v := range file[scope] {
			if _, declared := vars[k]; !declared {
				ignored = append(ignored, k)
				continue
			}
			vars[k] = v
		}
	}
	sort.Strings(ignored)
	return ignored, nil
}

// callerCredentials are the caller's AWS credentials, which SAM CLI hands a locally
// invoked function.
func callerCredentials(getenv func(string) string) (map[string]string, error) {
	id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		return nil, errors.New("no AWS credentials in the environment: source .sandgate/aws.env first (make invoke does)")
	}
	c := map[string]string{"AWS_ACCESS_KEY_ID": id, "AWS_SECRET_ACCESS_KEY": secret}
	if tok := getenv("AWS_SESSION_TOKEN"); tok != "" {
		c["AWS_SESSION_TOKEN"] = tok
	}
	return c, nil
}

// reachable fails clearly when the env-vars file points at a stack that is not running
// (make dev removes the file on a clean stop, but not after a crash).
func reachable(endpoint string) error {
	if endpoint == "" {
		return errors.New("the env-vars file sets no AWS_ENDPOINT_URL for this function")
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return fmt.Errorf("AWS_ENDPOINT_URL %q: %w", endpoint, err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 2*time.Second)
	if err != nil {
		return fmt.Errorf("the local stack is not answering at %s (start make dev): %w", endpoint, err)
	}
	return c.Close()
}
