package backup

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/sandgate/sandgate/internal/objsync"
)

// Object kinds, as the sync writes them in the "type" metadata.
const (
	typeFile = "file"
	typeLink = "symlink"
	typeDir  = "dir"
)

// metaType is the metadata key of an object's kind (objsync writes it).
const metaType = "type"

// decodeManifest parses and checks a manifest's JSON.
func decodeManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a manifest: %v", err)
	}
	if m.Version != manifestVersion {
		return nil, fmt.Errorf("version %d, want %d", m.Version, manifestVersion)
	}
	prefix, err := objsync.UserPrefix(m.UserID)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(m.Entries))
	var files int
	var bytes int64
	for _, e := range m.Entries {
		if seen[e.Path] {
			return nil, fmt.Errorf("path %q listed twice", e.Path)
		}
		seen[e.Path] = true
		if _, _, err := objsync.FileObject(prefix, e.Path, 0o644, m.Created, "", 0); err != nil {
			return nil, fmt.Errorf("path %q: %v", e.Path, err)
		}
		switch e.Type {
		case typeDir:
			if e.SHA256 != "" || e.Size != 0 {
				return nil, fmt.Errorf("directory %q has content", e.Path)
			}
		case typeFile, typeLink:
			if !validSum(e.SHA256) || e.Size < 0 {
				return nil, fmt.Errorf("%q: bad hash %q or size %d", e.Path, e.SHA256, e.Size)
			}
			files++
			bytes += e.Size
		default:
			return nil, fmt.Errorf("%q: unknown type %q", e.Path, e.Type)
		}
		if e.Meta[metaType] != e.Type {
			return nil, fmt.Errorf("%q: metadata type %q, entry %q", e.Path, e.Meta[metaType], e.Type)
		}
	}
	if files != m.Files || bytes != m.Bytes {
		return nil, fmt.Errorf("entries count %d files, %d bytes; the manifest says %d, %d", files, bytes, m.Files, m.Bytes)
	}
	return &m, nil
}
