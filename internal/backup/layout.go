package backup

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/s3bucket"
	"github.com/sandgate/sandgate/internal/userid"
)

// The backups area: outside users/, so neither a sandbox's scoped session (IAM,
// users/<id>/ only) nor its R2 temporary credentials (paths users/<id>/) reach it.
const (
	// Root holds everything of the backups.
	Root = "backups/"
	// ObjectsDir holds each content once, at ObjectsDir + its SHA-256 (hex).
	ObjectsDir = Root + "objects/"
	// ManifestsDir holds ManifestsDir + <userId>/<id>_<marker ETag>.json.
	ManifestsDir = Root + "manifests/"
	// LockKey is the one lock of the backups area's writers (lock.go).
	LockKey = Root + "lock"
	// SweptKey records when the last full sweep ran (sweep.go).
	SweptKey = Root + "swept"
	// IDFormat is a backup's id: the UTC time its manifest was made, to the millisecond;
	// ids sort as times do.
	IDFormat = "20060102T150405.000Z"
	// manifestVersion changes when the manifest's meaning does.
	manifestVersion = 1
)

// Store is the storage the backups need; *s3bucket.Bucket is one. Head and Copy are
// what objsync.Bucket lacks: a look at an object's metadata without its body, and a
// server-side copy.
type Store interface {
	objsync.Bucket
	Head(ctx context.Context, key string) (objsync.ObjectInfo, error)
	Copy(ctx context.Context, in objsync.CopyInput) error
}

var _ Store = (*s3bucket.Bucket)(nil)

// Errors of the package.
var (
	// ErrChanged: the prefix changed while it was being backed up (a sync ran, or had
	// not finished): no manifest was written; the next pass tries again.
	ErrChanged = errors.New("the prefix changed during the backup; nothing kept")
	// ErrNoMarker: the prefix has no marker: no sync ever finished, nothing to back up.
	ErrNoMarker = errors.New("no finished sync (no marker) to back up")
	// ErrUnhashed: an object of the prefix has no SHA-256 in its metadata (written by
	// another tool, never rewritten by a sync), so its content has no key: the user is
	// not backed up until a sync or an import rewrites it.
	ErrUnhashed = errors.New("an object has no sha256 in its metadata")
	// ErrNotFound: no backup matches.
	ErrNotFound = errors.New("no such backup")
	// ErrCorrupt: a manifest, or an object it names, is missing or not what it says.
	ErrCorrupt = errors.New("backup is missing or corrupt")
	// ErrBusy: another writer of the backups area holds its lock.
	ErrBusy = errors.New("the backups area is locked by another writer")
	// ErrLockLost: the lock's term ran out before the work was done; nothing more was
	// written.
	ErrLockLost = errors.New("the backups lock's term ran out")
)

// Entry is one path of a backup.
type Entry struct {
	// Path is relative to the workspace (the key under users/<id>/files/, a directory's
	// without its trailing slash).
	Path string `json:"path"`
	// Type is the object's kind as the sync wrote it: file, symlink or dir.
	Type string `json:"type"`
	// SHA256 names the content in ObjectsDir; empty for a directory.
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size"`
	// Mode and MTime are as the object's metadata says (octal; seconds.nanoseconds).
	Mode  string `json:"mode,omitempty"`
	MTime string `json:"mtime,omitempty"`
	// Meta is the object's complete user metadata, written back by a restore.
	Meta map[string]string `json:"meta"`
	// ETag and LastModified are the source object's as listed: the next backup of an
	// object still listed so needs no look at it.
	ETag         string    `json:"etag"`
	LastModified time.Time `json:"lastModified"`
}

// Manifest describes one backup: the user's files as of one finished sync.
type Manifest struct {
	Version int    `json:"version"`
	UserID  string `json:"userId"`
	ID      string `json:"id"`
	// Created is when the manifest was made.
	Created time.Time `json:"created"`
	// Marker is the prefix's marker the backup captured (the sync it is a copy of), and
	// MarkerETag its object's ETag; a backup taken under the user's lock without a
	// marker has a zero Marker and an empty MarkerETag.
	Marker     objsync.Marker `json:"marker"`
	MarkerETag string         `json:"markerETag,omitempty"`
	// Reason says why it was taken ("scheduled", "before restore").
	Reason  string  `json:"reason,omitempty"`
	Files   int     `json:"files"`
	Bytes   int64   `json:"bytes"`
	Entries []Entry `json:"entries"`
}

// Ref names one backup without reading it.
type Ref struct {
	UserID     string
	ID         string
	MarkerETag string
	Key        string
	Time       time.Time
}

// ManifestPrefix is where the user's manifests are.
func ManifestPrefix(userID string) (string, error) {
	if !userid.Valid(userID) {
		return "", fmt.Errorf("backup: user id %q is not a valid user id", userID)
	}
	return ManifestsDir + userID + "/", nil
}

// ObjectKey is where the content whose SHA-256 is sum is kept.
func ObjectKey(sum string) string { return ObjectsDir + sum }

func manifestKey(userID, id, markerETag string) string {
	return ManifestsDir + userID + "/" + id + "_" + markerETag + ".json"
}

// parseRef reads a manifest's key back; ok is false for any other key.
func parseRef(key string) (Ref, bool) {
	rest, ok := strings.CutPrefix(key, ManifestsDir)
	if !ok {
		return Ref{}, false
	}
	user, name, ok := strings.Cut(rest, "/")
	if !ok || !userid.Valid(user) || !strings.HasSuffix(name, ".json") {
		return Ref{}, false
	}
	id, etag, _ := strings.Cut(strings.TrimSuffix(name, ".json"), "_")
	t, err := time.Parse(IDFormat, id)
	if err != nil {
		return Ref{}, false
	}
	return Ref{UserID: user, ID: id, MarkerETag: etag, Key: key, Time: t}, true
}

// validSum reports whether s is a SHA-256 in lower-case hex.
func validSum(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == 32 && strings.ToLower(s) == s
}

// listAll lists every object under prefix.
func listAll(ctx context.Context, b objsync.Bucket, prefix string) ([]objsync.ObjectInfo, error) {
	var (
		all   []objsync.ObjectInfo
		token string
	)
	for {
		page, err := b.List(ctx, prefix, token)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Objects...)
		if page.Next == "" {
			return all, nil
		}
		token = page.Next
	}
}

// List returns the user's backups, oldest first.
func List(ctx context.Context, b objsync.Bucket, userID string) ([]Ref, error) {
	prefix, err := ManifestPrefix(userID)
	if err != nil {
		return nil, err
	}
	objs, err := listAll(ctx, b, prefix)
	if err != nil {
		return nil, fmt.Errorf("list backups of %s: %w", userID, err)
	}
	var refs []Ref
	for _, o := range objs {
		if r, ok := parseRef(o.Key); ok && r.UserID == userID {
			refs = append(refs, r)
		}
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].ID < refs[j].ID })
	return refs, nil
}

// Find returns the user's backup named from: its id, or a time (RFC 3339), which picks
// the newest backup made at or before it.
func Find(ctx context.Context, b objsync.Bucket, userID, from string) (Ref, error) {
	refs, err := List(ctx, b, userID)
	if err != nil {
		return Ref{}, err
	}
	for _, r := range refs {
		if r.ID == from {
			return r, nil
		}
	}
	t, err := time.Parse(time.RFC3339Nano, from)
	if err != nil {
		return Ref{}, fmt.Errorf("%w: %s has no backup %q (give a backup id from list-backups, or an RFC 3339 time)", ErrNotFound, userID, from)
	}
	for i := len(refs) - 1; i >= 0; i-- {
		if !refs[i].Time.After(t) {
			return refs[i], nil
		}
	}
	return Ref{}, fmt.Errorf("%w: %s has no backup made at or before %s", ErrNotFound, userID, t.UTC().Format(time.RFC3339))
}

// maxManifestBytes bounds a manifest read (about a million entries).
const maxManifestBytes = 512 << 20

// Load reads and checks a manifest: well-formed, of the user it is filed under, every
// entry's path and hash valid. A manifest that is not is ErrCorrupt.
func Load(ctx context.Context, b objsync.Bucket, ref Ref) (*Manifest, error) {
	_, body, err := b.Get(ctx, ref.Key)
	if errors.Is(err, objsync.ErrNotFound) {
		return nil, fmt.Errorf("%w: manifest %s is gone", ErrCorrupt, ref.Key)
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", ref.Key, err)
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, maxManifestBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", ref.Key, err)
	}
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%w: manifest %s is larger than %d bytes", ErrCorrupt, ref.Key, maxManifestBytes)
	}
	m, err := decodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %v", ErrCorrupt, ref.Key, err)
	}
	if m.UserID != ref.UserID || m.ID != ref.ID {
		return nil, fmt.Errorf("%w: manifest %s names user %s, backup %s", ErrCorrupt, ref.Key, m.UserID, m.ID)
	}
	return m, nil
}
