// Package secretslocal is the local stack's AWS Secrets Manager endpoint: the calls
// the product and its operators use (CreateSecret, GetSecretValue with version stages,
// PutSecretValue to rotate, DescribeSecret, ListSecrets), over the JSON 1.1 protocol,
// with every caller identified and authorised.
package secretslocal

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

// Version stages Secrets Manager moves on rotation.
const (
	StageCurrent  = "AWSCURRENT"
	StagePrevious = "AWSPREVIOUS"
	StagePending  = "AWSPENDING"
)

const targetPrefix = "secretsmanager."

type version struct {
	id      string
	value   string
	binary  []byte
	stages  map[string]bool
	created time.Time
}

type secret struct {
	name, arn   string
	description string
	created     time.Time
	versions    []*version // oldest first
}

func (s *secret) byStage(stage string) *version {
	for _, v := range s.versions {
		if v.stages[stage] {
			return v
		}
	}
	return nil
}

func (s *secret) byID(id string) *version {
	for _, v := range s.versions {
		if v.id == id {
			return v
		}
	}
	return nil
}

// Server serves Secrets Manager for one account and region.
type Server struct {
	Authority *identity.Authority
	// Authorizer decides every call; nil allows every signed caller.
	Authorizer identity.Authorizer
	Log        *slog.Logger

	mu      sync.Mutex
	secrets map[string]*secret // by name
}

// New returns an empty Secrets Manager.
func New(a *identity.Authority, authz identity.Authorizer, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{Authority: a, Authorizer: authz, Log: log, secrets: map[string]*secret{}}
}

// Put creates the secret name, or rotates it: value becomes AWSCURRENT and the old
// current version AWSPREVIOUS. It returns the secret's ARN. For seeding by the stack.
func (s *Server) Put(name, value string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[name]
	if sec == nil {
		var err error
		if sec, err = s.createLocked(name, ""); err != nil {
			return "", err
		}
	}
	s.addVersionLocked(sec, newID(), value, nil, []string{StageCurrent})
	return sec.arn, nil
}

func (s *Server) createLocked(name, description string) (*secret, error) {
	if name == "" || len(name) > 512 {
		return nil, &apiError{http.StatusBadRequest, "InvalidParameterException", "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!"}
	}
	if _, dup := s.secrets[name]; dup {
		return nil, &apiError{http.StatusBadRequest, "ResourceExistsException", fmt.Sprintf("The operation failed because the secret %s already exists.", name)}
	}
	sec := &secret{name: name, description: description, created: time.Now(),
		arn: fmt.Sprintf("arn:aws:secretsmanager:%s:%s:secret:%s-%s", s.Authority.Region, s.Authority.Account, name, suffix())}
	s.secrets[name] = sec
	return sec, nil
}

// addVersionLocked adds a version with stages, moving each stage off the version that
// held it; AWSCURRENT's old holder becomes AWSPREVIOUS.
func (s *Server) addVersionLocked(sec *secret, id, value string, binary []byte, stages []string) *version {
	v := &version{id: id, value: value, binary: binary, stages: map[string]bool{}, created: time.Now()}
	for _, st := range stages {
		if old := sec.byStage(st); old != nil {
			delete(old.stages, st)
			if st == StageCurrent {
				if prev := sec.byStage(StagePrevious); prev != nil {
					delete(prev.stages, StagePrevious)
				}
				old.stages[StagePrevious] = true
			}
		}
		v.stages[st] = true
	}
	sec.versions = append(sec.versions, v)
	// Versions without a stage are deprecated; AWS keeps about 100 of them.
	unstaged := 0
	for _, x := range sec.versions {
		if len(x.stages) == 0 {
			unstaged++
		}
	}
	if unstaged > 100 {
		kept := make([]*version, 0, len(sec.versions))
		for _, x := range sec.versions {
			if len(x.stages) == 0 && unstaged > 100 {
				unstaged--
				continue
			}
			kept = append(kept, x)
		}
		sec.versions = kept
	}
	return v
}

// lookupLocked finds a secret by name, full ARN or ARN without its random suffix.
func (s *Server) lookupLocked(id string) *secret {
	if sec := s.secrets[id]; sec != nil {
		return sec
	}
	for _, sec := range s.secrets {
		if sec.arn == id || strings.HasPrefix(id, "arn:") && strings.TrimSuffix(sec.arn, sec.arn[len(sec.arn)-7:]) == id {
			return sec
		}
	}
	return nil
}

type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

var errNotFound = &apiError{http.StatusBadRequest, "ResourceNotFoundException", "Secrets Manager can't find the specified secret."}

// ServeHTTP answers one Secrets Manager call.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, &apiError{http.StatusBadRequest, "InvalidRequestException", "could not read the request"})
		return
	}
	p, err := s.Authority.Verify(r, identity.SecretsManager, body)
	if err != nil {
		writeError(w, authError(err))
		return
	}
	op, ok := strings.CutPrefix(r.Header.Get("X-Amz-Target"), targetPrefix)
	if !ok {
		writeError(w, &apiError{http.StatusBadRequest, "UnknownOperationException", "missing or unknown X-Amz-Target"})
		return
	}
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, &apiError{http.StatusBadRequest, "SerializationException", "the request body is not JSON"})
		return
	}
	err = s.authorize(r.Context(), p, iampolicy.CallOf(r, body))
	var out map[string]any
	if err == nil {
		out, err = s.call(op, in)
	}
	if err != nil {
		var ae *apiError
		var de *identity.DeniedError
		switch {
		case errors.As(err, &ae):
			writeError(w, ae)
		case errors.As(err, &de):
			writeError(w, &apiError{http.StatusBadRequest, "AccessDeniedException", de.Error()})
		case errors.Is(err, identity.ErrUnsupported):
			writeError(w, &apiError{http.StatusBadRequest, "AccessDeniedException", err.Error()})
		default:
			writeError(w, &apiError{http.StatusInternalServerError, "InternalServiceError", err.Error()})
		}
		return
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Write(b)
}

func str(in map[string]any, k string) string {
	v, _ := in[k].(string)
	return v
}

// authorize asks the Authorizer about everything the call asks (iampolicy's
// derivation: the secret's ARN, or its name-?????? pattern for a secret that does not
// exist, so a caller learns nothing of secrets it may not read).
func (s *Server) authorize(ctx context.Context, p *identity.Principal, c iampolicy.Call) error {
	if s.Authorizer == nil {
		return nil
	}
	env := iampolicy.Env{Region: s.Authority.Region, Account: s.Authority.Account}
	reqs, err := iampolicy.SecretsManager(env, c, func(id string) (string, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if sec := s.lookupLocked(id); sec != nil {
			return sec.arn, true
		}
		return "", false
	})
	if err != nil {
		return &apiError{http.StatusBadRequest, "InvalidRequestException", err.Error()}
	}
	return iampolicy.AuthorizeAll(ctx, s.Authorizer, p, reqs)
}

func (s *Server) call(op string, in map[string]any) (map[string]any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch op {
	case "CreateSecret":
		sec, err := s.createLocked(str(in, "Name"), str(in, "Description"))
		if err != nil {
			return nil, err
		}
		out := map[string]any{"ARN": sec.arn, "Name": sec.name}
		if v, ok := in["SecretString"].(string); ok {
			ver := s.addVersionLocked(sec, tokenOr(in), v, nil, []string{StageCurrent})
			out["VersionId"] = ver.id
		}
		return out, nil
	case "GetSecretValue":
		sec := s.lookupLocked(str(in, "SecretId"))
		if sec == nil {
			return nil, errNotFound
		}
		stage, vid := str(in, "VersionStage"), str(in, "VersionId")
		var v *version
		switch {
		case vid != "":
			v = sec.byID(vid)
			if v != nil && stage != "" && !v.stages[stage] {
				return nil, &apiError{http.StatusBadRequest, "InvalidRequestException", "You provided a VersionStage that is not associated with the provided VersionId."}
			}
		case stage != "":
			v = sec.byStage(stage)
		default:
			v = sec.byStage(StageCurrent)
		}
		if v == nil {
			return nil, &apiError{http.StatusBadRequest, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: " + stage}
		}
		out := map[string]any{"ARN": sec.arn, "Name": sec.name, "VersionId": v.id,
			"VersionStages": stages(v), "CreatedDate": float64(v.created.UnixMilli()) / 1000}
		if v.binary != nil {
			out["SecretBinary"] = v.binary
		} else {
			out["SecretString"] = v.value
		}
		return out, nil
	case "PutSecretValue":
		sec := s.lookupLocked(str(in, "SecretId"))
		if sec == nil {
			return nil, errNotFound
		}
		value, ok := in["SecretString"].(string)
		if !ok {
			return nil, &apiError{http.StatusBadRequest, "InvalidParameterException", "You must provide either SecretString or SecretBinary."}
		}
		id := tokenOr(in)
		if old := sec.byID(id); old != nil {
			if old.value != value {
				return nil, &apiError{http.StatusBadRequest, "ResourceExistsException", "You can't modify an existing version, you can only create a new version."}
			}
			return map[string]any{"ARN": sec.arn, "Name": sec.name, "VersionId": old.id, "VersionStages": stages(old)}, nil
		}
		st := []string{StageCurrent}
		if list, ok := in["VersionStages"].([]any); ok {
			st = st[:0]
			for _, x := range list {
				if v, ok := x.(string); ok {
					st = append(st, v)
				}
			}
		}
		v := s.addVersionLocked(sec, id, value, nil, st)
		return map[string]any{"ARN": sec.arn, "Name": sec.name, "VersionId": v.id, "VersionStages": stages(v)}, nil
	case "DescribeSecret":
		sec := s.lookupLocked(str(in, "SecretId"))
		if sec == nil {
			return nil, errNotFound
		}
		vs := map[string]any{}
		for _, v := range sec.versions {
			vs[v.id] = stages(v)
		}
		return map[string]any{"ARN": sec.arn, "Name": sec.name, "Description": sec.description,
			"CreatedDate": float64(sec.created.UnixMilli()) / 1000, "VersionIdsToStages": vs}, nil
	case "ListSecrets":
		names := make([]string, 0, len(s.secrets))
		for n := range s.secrets {
			names = append(names, n)
		}
		sort.Strings(names)
		list := make([]any, 0, len(names))
		for _, n := range names {
			sec := s.secrets[n]
			list = append(list, map[string]any{"ARN": sec.arn, "Name": sec.name, "Description": sec.description,
				"CreatedDate": float64(sec.created.UnixMilli()) / 1000})
		}
		return map[string]any{"SecretList": list}, nil
	default:
		return nil, &apiError{http.StatusBadRequest, "UnknownOperationException", "The local Secrets Manager does not serve " + op}
	}
}

func stages(v *version) []string {
	out := make([]string, 0, len(v.stages))
	for s := range v.stages {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func tokenOr(in map[string]any) string {
	if t := str(in, "ClientRequestToken"); t != "" {
		return t
	}
	return newID()
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func suffix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// authError maps a refused signature to Secrets Manager's error.
func authError(err error) *apiError {
	msg := err.Error()
	var ae *identity.AuthError
	if errors.As(err, &ae) && ae.Detail != "" {
		msg = ae.Detail
	}
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return &apiError{http.StatusBadRequest, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	case errors.Is(err, identity.ErrUnknownKey), errors.Is(err, identity.ErrBadToken):
		return &apiError{http.StatusBadRequest, "UnrecognizedClientException", msg}
	case errors.Is(err, identity.ErrExpired):
		return &apiError{http.StatusBadRequest, "ExpiredTokenException", msg}
	case errors.Is(err, identity.ErrMalformed):
		return &apiError{http.StatusBadRequest, "IncompleteSignatureException", msg}
	default:
		return &apiError{http.StatusBadRequest, "InvalidSignatureException", msg}
	}
}

func writeError(w http.ResponseWriter, e *apiError) {
	b, _ := json.Marshal(map[string]string{"__type": e.code, "message": e.msg})
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", e.code)
	w.WriteHeader(e.status)
	w.Write(b)
}

// Current returns the AWSCURRENT string value of the secret id (a name or an ARN),
// for the stack's own resolution of {{resolve:secretsmanager:…}} references, which
// CloudFormation makes at deploy time with the deployer's rights.
func (s *Server) Current(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.lookupLocked(id)
	if sec == nil {
		return "", false
	}
	v := sec.byStage(StageCurrent)
	if v == nil || v.binary != nil {
		return "", false
	}
	return v.value, true
}
