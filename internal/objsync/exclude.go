package objsync

import (
	"fmt"
	"path"
	"strings"
)

// DefaultExcludes returns the patterns used when Syncer.Excludes is nil: caches that
// tools rebuild on their own, which would cost uploads on every build and restore
// nothing the user made. A function, so no caller can change another's defaults.
func DefaultExcludes() []string {
	return []string{
		"node_modules/.cache",
		".cache",
		"__pycache__",
		".pytest_cache",
		".mypy_cache",
		".npm/_cacache",
	}
}

// excluder matches slash-separated relative paths against exclude patterns.
//
// A pattern is one or more path.Match globs separated by "/". It matches a path whose
// trailing segments match it, at any depth ("node_modules/.cache" matches
// "app/node_modules/.cache"); a leading "/" anchors it at the root instead. A matched
// directory is excluded with everything below it.
type excluder struct {
	patterns []pattern
}

type pattern struct {
	anchored bool
	segs     []string
}

func newExcluder(globs []string) (*excluder, error) {
	ex := &excluder{}
	for _, g := range globs {
		anchored := strings.HasPrefix(g, "/")
		body := strings.Trim(g, "/")
		if body == "" {
			return nil, fmt.Errorf("%w: empty exclude pattern %q", ErrConfig, g)
		}
		segs := strings.Split(body, "/")
		for _, s := range segs {
			if _, err := path.Match(s, ""); err != nil || s == "" {
				return nil, fmt.Errorf("%w: exclude pattern %q: bad segment %q", ErrConfig, g, s)
			}
		}
		ex.patterns = append(ex.patterns, pattern{anchored: anchored, segs: segs})
	}
	return ex, nil
}

// match reports whether rel is excluded. The walk asks for every directory before
// entering it, so matching the trailing segments is enough to cover whole subtrees.
func (ex *excluder) match(rel string) bool {
	if len(ex.patterns) == 0 {
		return false
	}
	segs := strings.Split(rel, "/")
	for _, p := range ex.patterns {
		if len(p.segs) > len(segs) || p.anchored && len(p.segs) != len(segs) {
			continue
		}
		tail := segs[len(segs)-len(p.segs):]
		ok := true
		for i, s := range p.segs {
			if m, _ := path.Match(s, tail[i]); !m {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
