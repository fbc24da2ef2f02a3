// Command initfail reports an init error through the Runtime API and exits, as a
// runtime does when its handler cannot start.
package main

import (
	"net/http"
	"os"
	"strings"
)

func main() {
	body := `{"errorMessage":"missing configuration","errorType":"Runtime.ConfigError"}`
	resp, err := http.Post("http://"+os.Getenv("AWS_LAMBDA_RUNTIME_API")+"/2018-06-01/runtime/init/error",
		"application/json", strings.NewReader(body))
	if err == nil {
		resp.Body.Close()
	}
	os.Exit(1)
}
