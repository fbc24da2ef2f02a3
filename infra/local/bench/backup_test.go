package bench_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sandgate/sandgate/infra/local/s3local"
	"github.com/sandgate/sandgate/infra/local/testkit"
	"github.com/sandgate/sandgate/internal/backup"
	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// Backup pass sizes: users, files per user, bytes per file.
const (
	backupUsers = 10
	backupFiles = 50
	backupSize  = 64 << 10
)

// seedSynced writes a user's prefix as a finished sync leaves it: files with their
// metadata, then the marker.
func seedSynced(b *testing.B, store *s3bucket.Bucket, user string, files map[string][]byte) {
	b.Helper()
	ctx := context.Background()
	prefix, _ := objsync.UserPrefix(user)
	var total int64
	for rel, body := range files {
		sum := sha256.Sum256(body)
		key, meta, err := objsync.FileObject(prefix, rel, 0o644, time.Now(), hex.EncodeToString(sum[:]), 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := store.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(body), Size: int64(len(body)), Meta: meta, SHA256: sum[:]}); err != nil {
			b.Fatal(err)
		}
		total += int64(len(body))
	}
	key, body, meta, err := objsync.MarkerObject(prefix, objsync.Marker{Generation: 1, Time: time.Now(), Files: len(files), Bytes: total})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(body), Size: int64(len(body)), Meta: meta}); err != nil {
		b.Fatal(err)
	}
}

// rewriteOne changes the first byte of a user's first file and writes the marker
// again: what a sync of one changed file writes.
func rewriteOne(b *testing.B, store *s3bucket.Bucket, user string, x byte) {
	b.Helper()
	ctx := context.Background()
	prefix, _ := objsync.UserPrefix(user)
	key := prefix + objsync.FilesDir + "src/file000.bin"
	_, body, err := store.Get(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	data, _ := io.ReadAll(body)
	body.Close()
	data[0] ^= x
	sum := sha256.Sum256(data)
	_, meta, err := objsync.FileObject(prefix, "src/file000.bin", 0o644, time.Now(), hex.EncodeToString(sum[:]), 2)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Put(ctx, objsync.PutInput{Key: key, Body: bytes.NewReader(data), Size: int64(len(data)), Meta: meta, SHA256: sum[:]}); err != nil {
		b.Fatal(err)
	}
	mkey, mbody, mmeta, err := objsync.MarkerObject(prefix, objsync.Marker{Generation: 2, Time: time.Now(), Files: backupFiles, Bytes: backupFiles * backupSize})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Put(ctx, objsync.PutInput{Key: mkey, Body: bytes.NewReader(mbody), Size: int64(len(mbody)), Meta: mmeta}); err != nil {
		b.Fatal(err)
	}
}

// clearBackups empties the backups area.
func clearBackups(b *testing.B, store *s3bucket.Bucket) {
	b.Helper()
	for _, p := range []string{backup.ObjectsDir, backup.ManifestsDir, "bench/copies/"} {
		if _, err := objsync.DeletePrefix(context.Background(), store, p); err != nil {
			b.Fatal(err)
		}
	}
}

// forEach runs fn on every key with 16 at a time, as the backup does.
func forEach(keys []string, fn func(string) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	ch := make(chan string)
	for range backup.DefaultConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range ch {
				if err := fn(k); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	return first
}

// BenchmarkBackup_Pass: a cleanup pass's backup step over users whose prefixes all
// changed (the first backup: every file copied), then over the same unchanged users
// (nothing copied), then with one file changed per user; against, in the same
// iteration, the same objects copied by plain CopyObject calls (the copies alone) and
// by GET and PUT through this process (what server-side copies avoid), with the
// backup's concurrency. s3local (gofakes3, in memory) serves all of them.
func BenchmarkBackup_Pass(b *testing.B) {
	ctx := context.Background()
	store := testkit.StartS3(b, s3local.Config{}).Bucket(s3bucket.Options{UsePathStyle: true})
	rng := rand.New(rand.NewPCG(1, 2))
	users := make([]string, backupUsers)
	var keys []string
	for u := range users {
		users[u] = fmt.Sprintf("user_bench%02d", u)
		files := map[string][]byte{}
		for f := range backupFiles {
			body := make([]byte, backupSize)
			for i := range body {
				body[i] = byte(rng.Uint32())
			}
			files[fmt.Sprintf("src/file%03d.bin", f)] = body
			keys = append(keys, fmt.Sprintf("users/%s/files/src/file%03d.bin", users[u], f))
		}
		seedSynced(b, store, users[u], files)
	}
	objects := float64(backupUsers * backupFiles)
	mb := objects * backupSize / 1e6
	var first, unchanged, changed, plain, through time.Duration
	var firstReq, unchangedReq, changedReq int
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		clearBackups(b, store)
		now := time.Now().Add(time.Duration(i) * time.Hour)
		p := &backup.Pass{Backer: backup.Backer{Store: store, Now: func() time.Time { return now }}, Holder: "bench"}
		b.StartTimer()

		start := time.Now()
		sum, err := p.Run(ctx, users)
		first += time.Since(start)
		if err != nil || sum.BackedUp != backupUsers || sum.Copied != int(objects) {
			b.Fatalf("first pass: %+v, %v", sum, err)
		}
		firstReq += sum.Requests

		now = now.Add(time.Minute)
		start = time.Now()
		sum, err = p.Run(ctx, users)
		unchanged += time.Since(start)
		if err != nil || sum.Unchanged != backupUsers || sum.Copied != 0 {
			b.Fatalf("unchanged pass: %+v, %v", sum, err)
		}
		unchangedReq += sum.Requests

		b.StopTimer()
		for _, u := range users { // one file rewritten per user, then its marker, as a sync does
			rewriteOne(b, store, u, byte(i+1))
		}
		now = now.Add(time.Minute)
		b.StartTimer()
		start = time.Now()
		sum, err = p.Run(ctx, users)
		changed += time.Since(start)
		if err != nil || sum.BackedUp != backupUsers || sum.Copied != backupUsers {
			b.Fatalf("pass after one change per user: %+v, %v", sum, err)
		}
		changedReq += sum.Requests

		// Baselines: the same objects by CopyObject alone, and by GET and PUT.
		start = time.Now()
		err = forEach(keys, func(k string) error {
			return store.Copy(ctx, objsync.CopyInput{Src: k, Dst: "bench/copies/" + k, Size: backupSize})
		})
		plain += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		err = forEach(keys, func(k string) error {
			info, body, err := store.Get(ctx, k)
			if err != nil {
				return err
			}
			data, err := io.ReadAll(body)
			body.Close()
			if err != nil {
				return err
			}
			_, err = store.Put(ctx, objsync.PutInput{Key: "bench/copies/x/" + k, Body: bytes.NewReader(data), Size: info.Size, Meta: info.Meta})
			return err
		})
		through += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	b.ReportMetric(objects*n/first.Seconds(), "objects/s")
	b.ReportMetric(mb*n/first.Seconds(), "MB/s")
	b.ReportMetric(objects*n/plain.Seconds(), "copy-objects/s")
	b.ReportMetric(objects*n/through.Seconds(), "getput-objects/s")
	b.ReportMetric(first.Seconds()/plain.Seconds(), "x-copy")
	b.ReportMetric(first.Seconds()/through.Seconds(), "x-getput")
	b.ReportMetric(float64(firstReq)/n/backupUsers, "first-req/user")
	b.ReportMetric(float64(unchangedReq)/n/backupUsers, "unchanged-req/user")
	b.ReportMetric(float64(changedReq)/n/backupUsers, "changed-req/user")
	b.ReportMetric(ms(unchanged)/n/backupUsers, "unchanged-ms/user")
	b.ReportMetric(ms(changed)/n/backupUsers, "changed-ms/user")
}
