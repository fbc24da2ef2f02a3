package bench_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/lambdart"
	"github.com/sandgate/sandgate/infra/local/testkit"
)

// BenchmarkLambda_Bootstrap reports, per function of template.yaml, the size of its
// bootstrap as make build-aws builds it for Lambda (linux/arm64, stripped) and its
// init time — process start to its first request for an invocation, Lambda's Init
// Duration — on this machine's native build, each as a multiple of the smallest Go
// Lambda (testdata/minimal: aws-lambda-go and an echo handler) built and started the
// same way, alternately with the function in the same run.
//
//	go test -run '^$' -bench Lambda_Bootstrap -benchtime 10x ./infra/local/bench/
func BenchmarkLambda_Bootstrap(b *testing.B) {
	native := testkit.Binaries(b)
	s := testkit.Start(b, nil) // the template, resolved as the stack runs it
	dir := b.TempDir()
	awsDir, minimal := filepath.Join(dir, "aws"), filepath.Join(dir, "native", "minimal", "bootstrap")
	// The flags of the Makefile's GOFLAGS_LAMBDA and AWS_ENV.
	build(b, native.Root, []string{"GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0"},
		"-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w -buildid=", "-o", awsDir+"/", "./functions/...", "./infra/local/bench/testdata/minimal")
	build(b, native.Root, []string{"CGO_ENABLED=0"}, "-tags", "lambda.norpc", "-trimpath", "-o", minimal, "./infra/local/bench/testdata/minimal")
	minimalSize := fileSize(b, filepath.Join(awsDir, "minimal"))

	ids := make([]string, 0, len(s.Template.Functions))
	for id := range s.Template.Functions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		f := s.Template.Functions[id]
		b.Run(f.Name, func(b *testing.B) {
			var fn, base []time.Duration
			for range b.N {
				fn = append(fn, coldInit(b, filepath.Join(native.Dir, f.Name, "bootstrap"), f.Environment))
				base = append(base, coldInit(b, minimal, nil))
			}
			size := fileSize(b, filepath.Join(awsDir, f.Name))
			p50, m50 := quantile(fn, 0.5), quantile(base, 0.5)
			b.ReportMetric(float64(size)/1e6, "size-MB")
			b.ReportMetric(float64(size)/float64(minimalSize), "x-minimal-size")
			b.ReportMetric(ms(p50), "init-ms")
			b.ReportMetric(ms(m50), "minimal-init-ms")
			b.ReportMetric(float64(p50)/float64(m50), "x-minimal-init")
		})
	}
}

// coldInit starts path as a function in a runtime of its own, invokes it once with an
// event no handler accepts (so it does no I/O) and returns the process's init.
func coldInit(b *testing.B, path string, env map[string]string) time.Duration {
	b.Helper()
	var out bytes.Buffer
	rt := lambdart.New(slog.New(slog.DiscardHandler), &out)
	defer rt.Close()
	if err := rt.Add(lambdart.Function{Name: "Bench", Path: path, Env: env, Timeout: 30 * time.Second}); err != nil {
		b.Fatal(err)
	}
	_, _ = rt.Invoke(context.Background(), "Bench", []byte(`[]`))
	d, err := rt.InitDurations("Bench")
	if err != nil || len(d) != 1 {
		b.Fatalf("%s: inits %v, %v; output:\n%s", path, d, err, out.String())
	}
	return d[0]
}

func build(b *testing.B, root string, env []string, args ...string) {
	b.Helper()
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %v: %v\n%s", args, err, out)
	}
}

func fileSize(b *testing.B, path string) int64 {
	b.Helper()
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}
