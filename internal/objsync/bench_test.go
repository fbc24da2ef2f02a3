package objsync_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/internal/awsconf"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// BenchmarkThroughput compares Sync and Restore with rclone on the same gofakes3
// endpoint and the same data, in the same run: each iteration times sandgate, then
// rclone, and the benchmark reports both rates and their ratio (sandgate / rclone).
// rclone gets the same parallelism (--transfers and --checkers = DefaultConcurrency).
//
//	go test -run '^$' -bench Throughput -benchtime 3x ./internal/objsync/
func BenchmarkThroughput(b *testing.B) {
	rclone, err := exec.LookPath("rclone")
	if err != nil {
		b.Skip("rclone is not installed: `make bench` installs it (Debian package rclone)")
	}
	shapes := []struct {
		name  string
		files int
		size  int
	}{
		{"1000x10KB", 1000, 10 << 10},
		{"4x50MB", 4, 50 << 20},
	}
	for _, shape := range shapes {
		b.Run(shape.name, func(b *testing.B) {
			srv, err := s3local.Start(s3local.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			bk := benchBucket(b, srv)
			src := filepath.Join(b.TempDir(), "src")
			var total int64
			for i := range shape.files {
				p := filepath.Join(src, fmt.Sprintf("d%02d", i%20), fmt.Sprintf("f%04d.bin", i))
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, randomBytes(uint64(i), shape.size), 0o644); err != nil {
					b.Fatal(err)
				}
				total += int64(shape.size)
			}
			rc := rcloneRunner{bin: rclone, endpoint: srv.URL(), bucket: srv.Bucket()}

			b.Run("sync", func(b *testing.B) {
				var sg, rcl time.Duration
				for i := range b.N {
					prefix := fmt.Sprintf("bench/sync-sg-%d/", i)
					s, err := objsync.New(bk, prefix, src, filepath.Join(b.TempDir(), "state"))
					if err != nil {
						b.Fatal(err)
					}
					s.Log = quiet
					start := time.Now()
					st, err := s.Sync(context.Background())
					sg += time.Since(start)
					if err != nil || st.Files != shape.files {
						b.Fatalf("sandgate sync: %+v %v", st, err)
					}

					rcPrefix := fmt.Sprintf("bench/sync-rc-%d/", i)
					start = time.Now()
					rc.run(b, "copy", src, rc.remote(rcPrefix))
					rcl += time.Since(start)
					if n := countKeys(b, bk, rcPrefix); n != shape.files {
						b.Fatalf("rclone stored %d objects, want %d", n, shape.files)
					}
					objsync.DeletePrefix(context.Background(), bk, prefix)
					objsync.DeletePrefix(context.Background(), bk, rcPrefix)
				}
				report(b, total, sg, rcl)
			})

			// One copy in the bucket to restore, laid out by sandgate; rclone reads its files/.
			prefix := "bench/restore/"
			seed, err := objsync.New(bk, prefix, src, filepath.Join(b.TempDir(), "state"))
			if err != nil {
				b.Fatal(err)
			}
			seed.Log = quiet
			if _, err := seed.Sync(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.Run("restore", func(b *testing.B) {
				var sg, rcl time.Duration
				for range b.N {
					dst := filepath.Join(b.TempDir(), "sg")
					r, err := objsync.New(bk, prefix, dst, filepath.Join(b.TempDir(), "state"))
					if err != nil {
						b.Fatal(err)
					}
					r.Log = quiet
					start := time.Now()
					st, err := r.Restore(context.Background())
					sg += time.Since(start)
					if err != nil || st.Files != shape.files {
						b.Fatalf("sandgate restore: %+v %v", st, err)
					}
					os.RemoveAll(dst)

					dst = filepath.Join(b.TempDir(), "rc")
					start = time.Now()
					rc.run(b, "copy", rc.remote(prefix+objsync.FilesDir), dst)
					rcl += time.Since(start)
					if n := countFiles(b, dst); n != shape.files {
						b.Fatalf("rclone restored %d files, want %d", n, shape.files)
					}
					os.RemoveAll(dst)
				}
				report(b, total, sg, rcl)
			})
		})
	}
}

var quiet = slog.New(slog.DiscardHandler)

// report states both tools' rates for the same bytes, and their ratio.
func report(b *testing.B, total int64, sandgate, rclone time.Duration) {
	mb := float64(total) * float64(b.N) / 1e6
	sg, rc := mb/sandgate.Seconds(), mb/rclone.Seconds()
	b.ReportMetric(sg, "sandgate-MB/s")
	b.ReportMetric(rc, "rclone-MB/s")
	b.ReportMetric(sg/rc, "ratio")
}

func benchBucket(b *testing.B, srv *s3local.Server) objsync.Bucket {
	cfg, err := awsconf.Load(context.Background(), awsconf.Loopback(srv.URL())...)
	if err != nil {
		b.Fatal(err)
	}
	return s3bucket.New(s3bucket.NewClient(cfg, s3bucket.Options{UsePathStyle: true}), srv.Bucket())
}

func countKeys(b *testing.B, bk objsync.Bucket, prefix string) int {
	n, token := 0, ""
	for {
		page, err := bk.List(context.Background(), prefix, token)
		if err != nil {
			b.Fatal(err)
		}
		n += len(page.Objects)
		if page.Next == "" {
			return n
		}
		token = page.Next
	}
}

func countFiles(b *testing.B, dir string) int {
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// rcloneRunner runs rclone against the endpoint with an on-the-fly S3 remote
// configured through the environment: no config file is read or written.
type rcloneRunner struct {
	bin, endpoint, bucket string
}

func (r rcloneRunner) remote(prefix string) string { return ":s3:" + r.bucket + "/" + prefix }

func (r rcloneRunner) run(b *testing.B, args ...string) {
	b.Helper()
	cmd := exec.Command(r.bin, append(args,
		"--transfers", fmt.Sprint(objsync.DefaultConcurrency),
		"--checkers", fmt.Sprint(objsync.DefaultConcurrency),
		"--config", os.DevNull,
		"-q")...)
	// Only rclone's own settings: AWS_CA_BUNDLE and friends would make rclone's SDK
	// fail (the same trap as in FACTS.md) and mean nothing to a plain-HTTP endpoint.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "RCLONE_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env,
		"RCLONE_S3_PROVIDER=Other",
		"RCLONE_S3_ENDPOINT="+r.endpoint,
		"RCLONE_S3_FORCE_PATH_STYLE=true",
		"RCLONE_S3_ACCESS_KEY_ID=local",
		"RCLONE_S3_SECRET_ACCESS_KEY=local",
		"RCLONE_S3_REGION=us-east-1",
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("rclone %v: %v\n%s", args, err, out)
	}
}
