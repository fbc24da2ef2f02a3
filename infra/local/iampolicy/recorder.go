package iampolicy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// RecordExt ends the name of every record file SaveDir writes.
const RecordExt = ".iamrecord.jsonl"

// Record is one kind of allowed request: who (a role's name, a user's ARN or a
// service principal), which action, the statements that allowed it, and how often.
// Resource is one resource it was asked on (an example, for reports).
type Record struct {
	Principal string         `json:"principal"`
	Action    string         `json:"action"`
	Resource  string         `json:"resource"`
	Allowing  []StatementRef `json:"allowing"`
	Count     int            `json:"count"`
}

// StatementUse reports one registered statement: how many recorded requests it
// allowed, and how many it alone allowed.
type StatementUse struct {
	// Role is the role's name; Statement names the statement in its policy (an
	// identity policy's Name, or TrustPolicyName for the trust policy).
	Role      string
	Statement StatementRef
	// Allowed counts requests it allowed; Alone those no other statement allowed.
	Allowed, Alone int
	// Example is a request it alone allowed ("action on resource by principal"), or
	// one it allowed when it never did alone.
	Example string
}

// Needed reports a statement that some request could not have done without.
func (u StatementUse) Needed() bool { return u.Alone > 0 }

// Recorder records, for every allowed request, which identity-policy (and trust
// policy) statements allowed it, so that a statement no request needed — one whose
// requests other statements also allowed — shows as not needed. Records persist as
// JSON lines and merge across processes. Safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	records map[string]*Record // by recordKey
	// roles lists each role's statements by name (canonical refs, in the order
	// registered) and bodies their JSON; names maps each registered role (a stack's)
	// from the refs its own documents give to the canonical ones.
	roles  map[string][]StatementRef
	bodies map[string]map[StatementRef]string
	names  map[*identity.Role]map[StatementRef]StatementRef
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{records: map[string]*Record{}, roles: map[string][]StatementRef{},
		bodies: map[string]map[StatementRef]string{}, names: map[*identity.Role]map[StatementRef]StatementRef{}}
}

// Register adds roles whose statements Report lists: every statement of every
// identity policy, and of the trust policy. A role of the same name registered again
// (another stack of the same template deployed with other parameters: S3 and R2) adds
// the statements it has that were not registered yet, and its calls count for the
// statements they match by content, whatever position a condition gave each in its
// policy; a new statement whose name (its Sid or position) is taken by another is
// listed as "<name> (variant N)". Records saved to files carry these names, so merge
// them only into a recorder that registered the same stacks in the same order.
func (r *Recorder) Register(roles ...*identity.Role) error {
	for _, role := range roles {
		var refs []StatementRef
		bodies := map[StatementRef]string{}
		for _, p := range role.Policies {
			ids, docs, err := statementIDs(p.Document)
			if err != nil {
				return fmt.Errorf("register %s: policy %s: %w", role.Name, p.Name, err)
			}
			for i, id := range ids {
				ref := StatementRef{PolicyType: IdentityPolicy, Policy: p.Name, Statement: id}
				refs, bodies[ref] = append(refs, ref), docs[i]
			}
		}
		if len(role.Trust) > 0 {
			ids, docs, err := statementIDs(role.Trust)
			if err != nil {
				return fmt.Errorf("register %s: trust policy: %w", role.Name, err)
			}
			for i, id := range ids {
				ref := StatementRef{PolicyType: ResourcePolicy, Policy: TrustPolicyName(role), Statement: id}
				refs, bodies[ref] = append(refs, ref), docs[i]
			}
		}
		r.addRole(role, refs, bodies)
	}
	return nil
}

// addRole merges a role's statements into those registered under its name.
func (r *Recorder) addRole(role *identity.Role, refs []StatementRef, bodies map[StatementRef]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	have := r.bodies[role.Name]
	if have == nil {
		have = map[StatementRef]string{}
		r.bodies[role.Name] = have
	}
	names := map[StatementRef]StatementRef{}
	for _, ref := range refs {
		canon, found := ref, false
		for _, c := range r.roles[role.Name] {
			if c.PolicyType == ref.PolicyType && c.Policy == ref.Policy && have[c] == bodies[ref] {
				canon, found = c, true
				break
			}
		}
		if !found {
			for n := 2; ; n++ {
				if _, taken := have[canon]; !taken {
					break
				}
				canon.Statement = fmt.Sprintf("%s (variant %d)", ref.Statement, n)
			}
			have[canon] = bodies[ref]
			r.roles[role.Name] = append(r.roles[role.Name], canon)
		}
		names[ref] = canon
	}
	r.names[role] = names
}

// canonical names refs as the registered roles' statements: each ref of one of roles
// (the principal's and, for an AssumeRole, the role assumed) becomes the name Register
// gave its statement. Refs of roles not registered stay as they are.
func (r *Recorder) canonical(refs []StatementRef, roles ...*identity.Role) []StatementRef {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]StatementRef, len(refs))
	for i, ref := range refs {
		out[i] = ref
		for _, role := range roles {
			if c, ok := r.names[role][ref]; ok {
				out[i] = c
				break
			}
		}
	}
	return out
}

// statementIDs lists a policy's statements as iam-simulate names them: the Sid, or
// the 1-based index; and each statement's JSON, compacted.
func statementIDs(doc json.RawMessage) (ids, bodies []string, err error) {
	var p struct {
		Statement json.RawMessage
	}
	if err := json.Unmarshal(doc, &p); err != nil {
		return nil, nil, err
	}
	var raw []json.RawMessage
	if len(p.Statement) > 0 && p.Statement[0] == '{' {
		raw = append(raw, p.Statement)
	} else if len(p.Statement) > 0 {
		if err := json.Unmarshal(p.Statement, &raw); err != nil {
			return nil, nil, err
		}
	}
	for i, st := range raw {
		var one struct{ Sid string }
		if err := json.Unmarshal(st, &one); err != nil {
			return nil, nil, err
		}
		id := one.Sid
		if id == "" {
			id = strconv.Itoa(i + 1)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, st); err != nil {
			return nil, nil, err
		}
		ids, bodies = append(ids, id), append(bodies, b.String())
	}
	return ids, bodies, nil
}

// record files one allowed request, whose allowing statements are those of roles.
// Session-policy statements are left out: they bound a session, they are not the
// template's grants.
func (r *Recorder) record(principal, action, resource string, allowing []StatementRef, roles ...*identity.Role) {
	var refs []StatementRef
	for _, a := range allowing {
		if a.PolicyType == IdentityPolicy || a.PolicyType == ResourcePolicy {
			refs = append(refs, a)
		}
	}
	refs = r.canonical(refs, roles...)
	r.Add(Record{Principal: principal, Action: action, Resource: resource, Allowing: refs, Count: 1})
}

// Add merges rec (Count 0 counts as 1).
func (r *Recorder) Add(rec Record) {
	if rec.Count == 0 {
		rec.Count = 1
	}
	refs := append([]StatementRef(nil), rec.Allowing...)
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	rec.Allowing = refs
	k := recordKey(rec)
	r.mu.Lock()
	defer r.mu.Unlock()
	if have, ok := r.records[k]; ok {
		have.Count += rec.Count
		return
	}
	r.records[k] = &rec
}

func recordKey(rec Record) string {
	var b strings.Builder
	b.WriteString(rec.Principal)
	b.WriteByte(0)
	b.WriteString(rec.Action)
	for _, a := range rec.Allowing {
		b.WriteByte(0)
		b.WriteString(a.PolicyType + "\x01" + a.Policy + "\x01" + a.Statement)
	}
	return b.String()
}

// Records returns the records, sorted.
func (r *Recorder) Records() []Record {
	r.mu.Lock()
	out := make([]Record, 0, len(r.records))
	for _, rec := range r.records {
		c := *rec
		c.Allowing = append([]StatementRef(nil), rec.Allowing...)
		out = append(out, c)
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return recordKey(out[i]) < recordKey(out[j]) })
	return out
}

// WriteTo writes the records as JSON lines.
func (r *Recorder) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, rec := range r.Records() {
		b, err := json.Marshal(rec)
		if err != nil {
			return n, err
		}
		m, err := w.Write(append(b, '\n'))
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReadFrom merges JSON-line records from rd.
func (r *Recorder) ReadFrom(rd io.Reader) (int64, error) {
	br := bufio.NewReader(rd)
	var n int64
	for {
		line, err := br.ReadBytes('\n')
		n += int64(len(line))
		if s := strings.TrimSpace(string(line)); s != "" {
			var rec Record
			if jerr := json.Unmarshal([]byte(s), &rec); jerr != nil {
				return n, fmt.Errorf("read records: %w", jerr)
			}
			r.Add(rec)
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Save writes the records to path (replacing it whole, never half-written).
func (r *Recorder) Save(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".iamrecord-*")
	if err != nil {
		return fmt.Errorf("save records: %w", err)
	}
	if _, err := r.WriteTo(tmp); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("save records: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save records: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save records: %w", err)
	}
	return nil
}

// SaveDir saves the records to a new file in dir (created if missing), named so that
// processes saving to the same directory never collide, and returns its path.
func (r *Recorder) SaveDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("save records: %w", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	path := filepath.Join(dir, fmt.Sprintf("%d-%s%s", os.Getpid(), hex.EncodeToString(b[:]), RecordExt))
	return path, r.Save(path)
}

// Load merges the records of each file.
func (r *Recorder) Load(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("load records: %w", err)
		}
		_, err = r.ReadFrom(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("load records %s: %w", p, err)
		}
	}
	return nil
}

// LoadDir merges every record file SaveDir wrote in dir.
func (r *Recorder) LoadDir(dir string) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+RecordExt))
	if err != nil {
		return fmt.Errorf("load records: %w", err)
	}
	return r.Load(paths...)
}

// Report lists every registered statement, by role then statement, with how many
// recorded requests it allowed and how many it alone allowed: it was the only
// statement of its kind (identity policies, or the trust policy) that allowed them.
func (r *Recorder) Report() []StatementUse {
	recs := r.Records()
	r.mu.Lock()
	var out []StatementUse
	for role, refs := range r.roles {
		for _, ref := range refs {
			out = append(out, StatementUse{Role: role, Statement: ref})
		}
	}
	r.mu.Unlock()
	idx := map[StatementRef]int{}
	for i, u := range out {
		idx[u.Statement] = i
	}
	for _, rec := range recs {
		example := rec.Action + " on " + rec.Resource + " by " + rec.Principal
		perType := map[string]int{}
		for _, a := range rec.Allowing {
			perType[a.PolicyType]++
		}
		for _, a := range rec.Allowing {
			i, ok := idx[a]
			if !ok {
				continue
			}
			u := &out[i]
			u.Allowed += rec.Count
			if perType[a.PolicyType] == 1 {
				if u.Alone == 0 {
					u.Example = example
				}
				u.Alone += rec.Count
			} else if u.Example == "" {
				u.Example = example
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return out[i].Role < out[j].Role
		}
		return out[i].Statement.String() < out[j].Statement.String()
	})
	return out
}
