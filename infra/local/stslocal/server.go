// Package stslocal is the local stack's AWS STS endpoint: AssumeRole and
// GetCallerIdentity over the Query protocol, on the sessions of an identity.Authority.
package stslocal

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sandgate/sandgate/infra/local/identity"
)

const xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"

// TrustRequest is an AssumeRole for the trust decision: who asks, for which role,
// and whether the call sets session tags (which needs sts:TagSession as well).
type TrustRequest struct {
	Caller         *identity.Principal
	Role           *identity.Role
	Tags           map[string]string
	SourceIdentity string
}

// Trust decides whether an AssumeRole may proceed; a non-nil error is the denial,
// answered as AccessDenied with its message.
type Trust func(TrustRequest) error

// Server serves STS.
type Server struct {
	Authority *identity.Authority
	// Trust decides AssumeRole; nil allows every signed caller and logs the request,
	// so the decision a policy evaluator would make can be reviewed.
	Trust Trust
	Log   *slog.Logger
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// ServeHTTP answers one STS Query request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "could not read the request")
		return
	}
	caller, err := s.Authority.Verify(r, identity.STS, body)
	if err != nil {
		status, code := authError(err)
		msg := err.Error()
		var ae *identity.AuthError
		if errors.As(err, &ae) && ae.Detail != "" {
			msg = ae.Detail
		}
		writeError(w, status, code, msg)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		writeError(w, http.StatusBadRequest, "MalformedQueryString", "the request body is not a form")
		return
	}
	for k, v := range r.URL.Query() {
		form[k] = append(form[k], v...)
	}
	switch form.Get("Action") {
	case "GetCallerIdentity":
		writeXML(w, getCallerIdentityResponse{Xmlns: xmlns, Result: callerIdentity{
			Arn: caller.ARN, UserID: caller.UserID, Account: caller.Account}, Meta: meta()})
	case "AssumeRole":
		s.assumeRole(w, caller, form)
	default:
		writeError(w, http.StatusBadRequest, "InvalidAction", fmt.Sprintf("Could not find operation %s for version 2011-06-15", form.Get("Action")))
	}
}

func (s *Server) assumeRole(w http.ResponseWriter, caller *identity.Principal, form url.Values) {
	spec := identity.SessionSpec{
		RoleARN: form.Get("RoleArn"), SessionName: form.Get("RoleSessionName"),
		SourceIdentity: form.Get("SourceIdentity"), Caller: caller,
	}
	if spec.RoleARN == "" || spec.SessionName == "" {
		writeError(w, http.StatusBadRequest, "ValidationError", "RoleArn and RoleSessionName are required")
		return
	}
	if d := form.Get("DurationSeconds"); d != "" {
		secs, err := strconv.Atoi(d)
		if err != nil {
			writeError(w, http.StatusBadRequest, "ValidationError", "DurationSeconds is not a number")
			return
		}
		spec.Duration = time.Duration(secs) * time.Second
	}
	if p := form.Get("Policy"); p != "" {
		if !json.Valid([]byte(p)) {
			writeError(w, http.StatusBadRequest, "MalformedPolicyDocument", "The policy is not in the valid JSON format.")
			return
		}
		spec.Policy = json.RawMessage(p)
	}
	for i := 1; ; i++ {
		k := form.Get(fmt.Sprintf("Tags.member.%d.Key", i))
		if k == "" {
			break
		}
		if spec.Tags == nil {
			spec.Tags = map[string]string{}
		}
		spec.Tags[k] = form.Get(fmt.Sprintf("Tags.member.%d.Value", i))
	}
	for i := 1; ; i++ {
		k := form.Get(fmt.Sprintf("TransitiveTagKeys.member.%d", i))
		if k == "" {
			break
		}
		spec.TransitiveTagKeys = append(spec.TransitiveTagKeys, k)
	}
	role, ok := s.Authority.Role(spec.RoleARN)
	if !ok {
		// AWS does not tell a caller whether a role exists.
		writeError(w, http.StatusForbidden, "AccessDenied", fmt.Sprintf("User: %s is not authorized to perform: sts:AssumeRole on resource: %s", caller.ARN, spec.RoleARN))
		return
	}
	treq := TrustRequest{Caller: caller, Role: role, Tags: spec.Tags, SourceIdentity: spec.SourceIdentity}
	if s.Trust == nil {
		s.log().Info("assume role not evaluated: no trust evaluator", "principal", caller.ARN, "role", role.ARN, "tags", len(spec.Tags))
	} else if err := s.Trust(treq); err != nil {
		writeError(w, http.StatusForbidden, "AccessDenied", err.Error())
		return
	}
	c, p, err := s.Authority.Issue(spec)
	if err != nil {
		var ve *identity.ValidationError
		if errors.As(err, &ve) {
			code := "ValidationError"
			if strings.Contains(ve.Msg, "Packed policy") {
				code = "PackedPolicyTooLarge"
			}
			writeError(w, http.StatusBadRequest, code, ve.Msg)
			return
		}
		writeError(w, http.StatusInternalServerError, "InternalFailure", err.Error())
		return
	}
	res := assumeRoleResult{
		Credentials: xmlCredentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey,
			SessionToken: c.SessionToken, Expiration: c.Expires.UTC().Format(time.RFC3339)},
		AssumedRoleUser: assumedRoleUser{Arn: p.ARN, AssumedRoleID: p.UserID},
		SourceIdentity:  p.SourceIdentity,
	}
	if len(spec.Policy) > 0 || len(spec.Tags) > 0 {
		// The share of the packed-policy budget used, as a percentage.
		size := (len(p.SessionPolicy) + 40*len(spec.Tags)) * 100 / identity.MaxSessionPolicyBytes
		res.PackedPolicySize = &size
	}
	writeXML(w, assumeRoleResponse{Xmlns: xmlns, Result: res, Meta: meta()})
}

// authError maps a refused signature to STS's status and error code.
func authError(err error) (int, string) {
	switch {
	case errors.Is(err, identity.ErrUnsigned):
		return http.StatusForbidden, "MissingAuthenticationToken"
	case errors.Is(err, identity.ErrUnknownKey), errors.Is(err, identity.ErrBadToken):
		return http.StatusForbidden, "InvalidClientTokenId"
	case errors.Is(err, identity.ErrExpired):
		return http.StatusBadRequest, "ExpiredToken"
	case errors.Is(err, identity.ErrBadSignature), errors.Is(err, identity.ErrSkewed):
		return http.StatusForbidden, "SignatureDoesNotMatch"
	default:
		return http.StatusBadRequest, "IncompleteSignature"
	}
}

type responseMetadata struct {
	RequestID string `xml:"RequestId"`
}

func meta() responseMetadata {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return responseMetadata{RequestID: h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]}
}

type callerIdentity struct {
	Arn     string `xml:"Arn"`
	UserID  string `xml:"UserId"`
	Account string `xml:"Account"`
}

type getCallerIdentityResponse struct {
	XMLName xml.Name         `xml:"GetCallerIdentityResponse"`
	Xmlns   string           `xml:"xmlns,attr"`
	Result  callerIdentity   `xml:"GetCallerIdentityResult"`
	Meta    responseMetadata `xml:"ResponseMetadata"`
}

type xmlCredentials struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type assumedRoleUser struct {
	Arn           string `xml:"Arn"`
	AssumedRoleID string `xml:"AssumedRoleId"`
}

type assumeRoleResult struct {
	Credentials      xmlCredentials  `xml:"Credentials"`
	AssumedRoleUser  assumedRoleUser `xml:"AssumedRoleUser"`
	PackedPolicySize *int            `xml:"PackedPolicySize,omitempty"`
	SourceIdentity   string          `xml:"SourceIdentity,omitempty"`
}

type assumeRoleResponse struct {
	XMLName xml.Name         `xml:"AssumeRoleResponse"`
	Xmlns   string           `xml:"xmlns,attr"`
	Result  assumeRoleResult `xml:"AssumeRoleResult"`
	Meta    responseMetadata `xml:"ResponseMetadata"`
}

type errorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func writeXML(w http.ResponseWriter, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "InternalFailure", err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", meta().RequestID)
	w.WriteHeader(http.StatusOK)
	w.Write(append([]byte(xml.Header), b...))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	var e errorResponse
	e.Xmlns = xmlns
	e.Error.Type = "Sender"
	if status >= 500 {
		e.Error.Type = "Receiver"
	}
	e.Error.Code, e.Error.Message = code, msg
	e.RequestID = meta().RequestID
	b, _ := xml.Marshal(e)
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", e.RequestID)
	w.WriteHeader(status)
	w.Write(append([]byte(xml.Header), b...))
}
