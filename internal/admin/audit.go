package admin

import (
	"context"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/sandgate/sandgate/internal/logging"
)

// Log keys of the audit line.
const (
	logAudit  = "audit"
	logCaller = "caller"
	logAction = "action"
	logResult = "result"
	logDetail = "detail"
)

// Audit writes one line per operator action: who (the caller's identity, as STS
// names it), what, on whom, and the outcome. It never writes a token or a secret.
type Audit struct {
	Log *slog.Logger
	// Caller is the acting identity's ARN (CallerIdentity).
	Caller string
}

// Record writes the audit line of one action; err nil is "ok".
func (au *Audit) Record(ctx context.Context, action, userID string, err error, detail ...any) {
	if au == nil || au.Log == nil {
		return
	}
	result := "ok"
	level := slog.LevelInfo
	if err != nil {
		result, level = "error: "+err.Error(), slog.LevelWarn
	}
	attrs := []any{logAudit, true, logCaller, au.Caller, logAction, action}
	if userID != "" {
		attrs = append(attrs, logging.UserID, userID)
	}
	attrs = append(attrs, logResult, result)
	if len(detail) > 0 {
		attrs = append(attrs, slog.Group(logDetail, detail...))
	}
	au.Log.Log(ctx, level, "admin "+action, attrs...)
}

// STSAPI is the STS call CallerIdentity makes.
type STSAPI interface {
	GetCallerIdentity(ctx context.Context, in *sts.GetCallerIdentityInput, optFns ...func(*sts.Options)) (*sts.GetCallerIdentityOutput, error)
}

// CallerIdentity returns the ARN STS names the caller by.
func CallerIdentity(ctx context.Context, api STSAPI) (string, error) {
	out, err := api.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", err
	}
	if out.Arn == nil {
		return "", nil
	}
	return *out.Arn, nil
}
