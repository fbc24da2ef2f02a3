package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/sandgate/sandgate/internal/objsync"
	"github.com/sandgate/sandgate/internal/state"
	"github.com/sandgate/sandgate/internal/userid"
)

// Importing a bucket of the original design. It kept, per user, users/<userId>/config/
// (e.g. config/clawdbot.json), users/<userId>/workspace/ and users/<userId>/.last-sync;
// and before per-user isolation, one flat tree at the bucket's root (config/,
// workspace/, .last-sync) that every user shared. Each file becomes the file at the
// same path in its user's sandgate workspace: users/<userId>/config/clawdbot.json is
// restored as config/clawdbot.json (object users/<userId>/files/config/clawdbot.json,
// with the metadata a sync writes), and the user gets a .last-sync marker as the agent
// writes one. The original markers are not copied: sandgate's replaces them.

// The original design's tree names, under users/<userId>/ or at the root.
var importDirs = []string{"config/", "workspace/"}

// originalMarker is the original design's marker name.
const originalMarker = ".last-sync"

// Copier copies an object server-side, when source and destination share a store:
// srcKey of the source bucket to dstKey of the destination, with meta replacing the
// metadata; it returns the new object's ETag.
type Copier interface {
	Copy(ctx context.Context, srcKey, dstKey string, meta map[string]string) (string, error)
}

// ImportOptions say what to import.
type ImportOptions struct {
	// Source is the original design's bucket; SourceName names it in the report.
	Source     objsync.Bucket
	SourceName string
	// Copier copies server-side; nil reads each object and writes it (a source in
	// another store).
	Copier Copier
	// FlatTo is the user who receives the flat root tree; "" leaves it, reported.
	FlatTo string
	// DryRun reports what maps where, what is skipped and why, and copies nothing.
	DryRun bool
}

// Import is what ImportBucket found and did.
type Import struct {
	Source string       `json:"source"`
	DryRun bool         `json:"dryRun"`
	Users  []UserImport `json:"users"`
	// Skipped are source keys (or prefixes) that map nowhere, and why.
	Skipped []Skip `json:"skipped"`
	// Totals over the users.
	Copied, Present, Conflicts int
	Bytes                      int64
}

// UserImport is one user's part.
type UserImport struct {
	UserID string `json:"userId"`
	// From is the source tree: users/<id>/ or the flat root.
	From string `json:"from"`
	// Skipped says why the user was not imported ("" when imported).
	Skipped string `json:"skipped,omitempty"`
	// Files maps each source key to its destination key.
	Files []FileImport `json:"files"`
	// Marker reports that a .last-sync marker was written (or would be).
	Marker bool `json:"marker"`
}

// FileImport is one file.
type FileImport struct {
	Source string `json:"source"`
	Dest   string `json:"dest"`
	Size   int64  `json:"size"`
	// Outcome: "copied" (verified), "present" (already there, same content),
	// "conflict" (another content there: left alone), "would copy" (dry run).
	Outcome string `json:"outcome"`
}

// Skip is a source key or prefix that is not imported.
type Skip struct {
	Key    string `json:"key"`
	Reason string `json:"reason"`
}

// ImportBucket copies a bucket of the original design into users' prefixes: copy-only
// (nothing is ever deleted or overwritten: a destination holding other content is a
// conflict, reported), idempotent and resumable (a file already there with the same
// SHA-256 is "present"), each copy verified by size and checksum. A user whose id fails
// the user-id rule, or who has a live sandbox (or whose data is being purged), is
// skipped with the reason; so is every key that does not map.
func (a *Admin) ImportBucket(ctx context.Context, o ImportOptions) (*Import, error) {
	imp, err := a.importBucket(ctx, o)
	detail := []any{"source", o.SourceName, "dryRun", o.DryRun}
	if imp != nil {
		detail = append(detail, "users", len(imp.Users), "copied", imp.Copied, "present", imp.Present, "conflicts", imp.Conflicts)
	}
	a.Audit.Record(ctx, "import-bucket", "", err, detail...)
	return imp, err
}

// plannedFile is a source object and the workspace path it maps to.
type plannedFile struct {
	info objsync.ObjectInfo
	rel  string
}

func (a *Admin) importBucket(ctx context.Context, o ImportOptions) (*Import, error) {
	if o.FlatTo != "" {
		if err := checkUser(o.FlatTo); err != nil {
			return nil, fmt.Errorf("-flat-to: %w", err)
		}
	}
	imp := &Import{Source: o.SourceName, DryRun: o.DryRun, Users: []UserImport{}, Skipped: []Skip{}}
	perUser := map[string][]plannedFile{}
	from := map[string]string{}
	badUsers := map[string]bool{}
	token := ""
	for {
		page, err := o.Source.List(ctx, "", token)
		if err != nil {
			return nil, fmt.Errorf("list the source bucket: %w", err)
		}
		for _, obj := range page.Objects {
			user, rel, skip := mapKey(obj.Key, o.FlatTo)
			switch {
			case skip == errNotUser:
				prefix := "users/" + strings.SplitN(strings.TrimPrefix(obj.Key, "users/"), "/", 2)[0] + "/"
				if !badUsers[prefix] {
					badUsers[prefix] = true
					imp.Skipped = append(imp.Skipped, Skip{Key: prefix, Reason: skip.Error()})
				}
			case skip != nil:
				imp.Skipped = append(imp.Skipped, Skip{Key: obj.Key, Reason: skip.Error()})
			case rel == "":
				// The original marker: sandgate writes its own.
			default:
				perUser[user] = append(perUser[user], plannedFile{info: obj, rel: rel})
				tree := "users/" + user + "/"
				if !strings.HasPrefix(obj.Key, "users/") {
					tree = "the bucket root"
				}
				if !strings.Contains(from[user], tree) {
					from[user] = strings.TrimPrefix(from[user]+" and "+tree, " and ")
				}
			}
		}
		if page.Next == "" {
			break
		}
		token = page.Next
	}
	users := make([]string, 0, len(perUser))
	for u := range perUser {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		ui, err := a.importUser(ctx, o, u, from[u], perUser[u])
		if err != nil {
			return imp, err
		}
		for _, f := range ui.Files {
			switch f.Outcome {
			case "copied":
				imp.Copied++
				imp.Bytes += f.Size
			case "present":
				imp.Present++
			case "conflict":
				imp.Conflicts++
			}
		}
		imp.Users = append(imp.Users, ui)
	}
	return imp, nil
}

// Reasons a source key is skipped.
var (
	errNotUser    = errors.New("not a user id (user_ and 1-64 ASCII letters or digits): the user's tree is skipped")
	errFlatNoUser = errors.New("flat tree of the original design: no owner named (-flat-to userId)")
	errNoMap      = errors.New("does not map: only config/, workspace/ and .last-sync are the original design's")
	errDirKey     = errors.New("directory placeholder: nothing to copy")
)

// mapKey maps a source key to its user and workspace path; rel "" with no error is
// the original marker, which is not copied.
func mapKey(key, flatTo string) (user, rel string, skip error) {
	rest := key
	if after, ok := strings.CutPrefix(key, "users/"); ok {
		id, tail, found := strings.Cut(after, "/")
		if !found {
			return "", "", errNoMap
		}
		if !userid.Valid(id) {
			return "", "", errNotUser
		}
		user, rest = id, tail
	} else {
		if flatTo == "" {
			if rest == originalMarker || hasAnyPrefix(rest, importDirs) {
				return "", "", errFlatNoUser
			}
			return "", "", errNoMap
		}
		user = flatTo
	}
	switch {
	case rest == originalMarker:
		return user, "", nil
	case !hasAnyPrefix(rest, importDirs):
		return "", "", errNoMap
	case strings.HasSuffix(rest, "/"):
		return "", "", errDirKey
	}
	return user, rest, nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// importUser imports one user's files.
func (a *Admin) importUser(ctx context.Context, o ImportOptions, user, from string, files []plannedFile) (UserImport, error) {
	ui := UserImport{UserID: user, From: from, Files: []FileImport{}}
	sb, err := a.Store.Get(ctx, user)
	switch {
	case errors.Is(err, state.ErrNotFound):
	case err != nil:
		return ui, fmt.Errorf("import %s: %w", user, err)
	case sb.State == state.Purging:
		ui.Skipped = "the user's data is being purged"
		return ui, nil
	case sb.State.Counted() && !sb.Expired(a.now()):
		ui.Skipped = fmt.Sprintf("live sandbox (%s): its sync would race the copy; stop it (admin stop -wait) and run again", sb.State)
		return ui, nil
	}
	prefix, err := objsync.UserPrefix(user)
	if err != nil {
		return ui, err
	}
	existing, err := a.listKeys(ctx, prefix)
	if err != nil {
		return ui, fmt.Errorf("import %s: %w", user, err)
	}
	var total int64
	count := 0
	for _, f := range files {
		fi, err := a.importFile(ctx, o, prefix, f, existing)
		if errors.Is(err, objsync.ErrBadKey) {
			ui.Files = append(ui.Files, FileImport{Source: f.info.Key, Outcome: "skipped: path not storable"})
			continue
		}
		if err != nil {
			return ui, fmt.Errorf("import %s: %w", f.info.Key, err)
		}
		ui.Files = append(ui.Files, fi)
	}
	// The marker, once, as the agent writes it: what the prefix holds now.
	if _, ok := existing[objsync.MarkerKey(prefix)]; ok {
		return ui, nil
	}
	ui.Marker = true
	if o.DryRun {
		return ui, nil
	}
	after, err := a.listKeys(ctx, prefix)
	if err != nil {
		return ui, fmt.Errorf("import %s: %w", user, err)
	}
	for k, size := range after {
		if strings.HasPrefix(k, prefix+objsync.FilesDir) {
			count++
			total += size
		}
	}
	key, body, meta, err := objsync.MarkerObject(prefix, objsync.Marker{Generation: 0, Time: a.now().UTC(), Files: count, Bytes: total})
	if err != nil {
		return ui, err
	}
	_, err = a.Bucket.Put(ctx, objsync.PutInput{Key: key, Body: strings.NewReader(string(body)), Size: int64(len(body)),
		Meta: meta, IfNoneMatch: true})
	if err != nil && !errors.Is(err, objsync.ErrPrecondition) {
		return ui, fmt.Errorf("import %s: write the marker: %w", user, err)
	}
	return ui, nil
}

// listKeys maps every key under prefix to its size.
func (a *Admin) listKeys(ctx context.Context, prefix string) (map[string]int64, error) {
	keys := map[string]int64{}
	token := ""
	for {
		page, err := a.Bucket.List(ctx, prefix, token)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Objects {
			keys[o.Key] = o.Size
		}
		if page.Next == "" {
			return keys, nil
		}
		token = page.Next
	}
}

// importFile copies one file unless its destination holds it already, and verifies
// the copy.
func (a *Admin) importFile(ctx context.Context, o ImportOptions, prefix string, f plannedFile, existing map[string]int64) (FileImport, error) {
	// The content's SHA-256, read from the source: what the metadata records and the
	// copy is checked against. The body is kept in a temporary file for a write.
	sum, body, err := readSource(ctx, o.Source, f.info.Key, o.Copier == nil && !o.DryRun)
	if err != nil {
		return FileImport{}, err
	}
	if body != nil {
		defer func() { body.Close(); os.Remove(body.Name()) }()
	}
	mtime := f.info.LastModified
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	dst, meta, err := objsync.FileObject(prefix, f.rel, 0o644, mtime, sum, 0)
	if err != nil {
		return FileImport{}, err
	}
	fi := FileImport{Source: f.info.Key, Dest: dst, Size: f.info.Size}
	if _, ok := existing[dst]; ok {
		info, rc, err := a.Bucket.Get(ctx, dst)
		if err != nil {
			return fi, fmt.Errorf("read %s: %w", dst, err)
		}
		rc.Close()
		if objsync.ObjectSHA256(info.Meta) == sum && info.Size == f.info.Size {
			fi.Outcome = "present"
		} else {
			fi.Outcome = "conflict"
		}
		return fi, nil
	}
	if o.DryRun {
		fi.Outcome = "would copy"
		return fi, nil
	}
	var etag string
	if o.Copier != nil {
		etag, err = o.Copier.Copy(ctx, f.info.Key, dst, meta)
	} else {
		raw, _ := hex.DecodeString(sum)
		etag, err = a.Bucket.Put(ctx, objsync.PutInput{Key: dst, Body: body, Size: f.info.Size, Meta: meta, SHA256: raw, IfNoneMatch: true})
	}
	if errors.Is(err, objsync.ErrPrecondition) {
		fi.Outcome = "conflict" // written meanwhile
		return fi, nil
	}
	if err != nil {
		return fi, fmt.Errorf("copy to %s: %w", dst, err)
	}
	// Verified: the size, the recorded checksum, and (a server-side copy keeps the
	// content's ETag) the source's ETag.
	info, rc, err := a.Bucket.Get(ctx, dst)
	if err != nil {
		return fi, fmt.Errorf("verify %s: %w", dst, err)
	}
	rc.Close()
	switch {
	case info.Size != f.info.Size:
		return fi, fmt.Errorf("verify %s: %d bytes, the source has %d", dst, info.Size, f.info.Size)
	case objsync.ObjectSHA256(info.Meta) != sum:
		return fi, fmt.Errorf("verify %s: checksum %q recorded, want %s", dst, objsync.ObjectSHA256(info.Meta), sum)
	case o.Copier != nil && f.info.ETag != "" && info.ETag != f.info.ETag:
		return fi, fmt.Errorf("verify %s: ETag %s, the source's is %s", dst, info.ETag, f.info.ETag)
	case etag != "" && info.ETag != etag:
		return fi, fmt.Errorf("verify %s: ETag %s, the write returned %s", dst, info.ETag, etag)
	}
	fi.Outcome = "copied"
	return fi, nil
}

// readSource reads key's content and returns its SHA-256 (hex) and, when keep, the
// content in a temporary file positioned at its start.
func readSource(ctx context.Context, src objsync.Bucket, key string, keep bool) (string, *os.File, error) {
	_, rc, err := src.Get(ctx, key)
	if err != nil {
		return "", nil, fmt.Errorf("read %s: %w", key, err)
	}
	defer rc.Close()
	h := sha256.New()
	var w io.Writer = h
	var tmp *os.File
	if keep {
		if tmp, err = os.CreateTemp("", "sandgate-import-"); err != nil {
			return "", nil, err
		}
		w = io.MultiWriter(h, tmp)
	}
	if _, err := io.Copy(w, rc); err != nil {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
		return "", nil, fmt.Errorf("read %s: %w", key, err)
	}
	if tmp != nil {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			return "", nil, err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), tmp, nil
}
