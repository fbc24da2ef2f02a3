package iampolicy

import (
	"fmt"
	"net/url"
	"sort"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// STS condition keys.
const (
	keyRoleSessionName   = "sts:RoleSessionName"
	keySourceIdentity    = "sts:SourceIdentity"
	keyTransitiveTagKeys = "sts:TransitiveTagKeys"
)

// STS derives what an STS Query call asks, for the caller's own policies
// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_awssecuritytokenservice.html):
// AssumeRole as AssumeRoleRequests; GetCallerIdentity needs no permission (none).
// The role's trust policy is the resource policy of these requests: see
// Evaluator.Trust, which asks them with it.
func STS(env Env, c Call) ([]identity.Request, error) {
	form, err := url.ParseQuery(string(c.Body))
	if err != nil {
		return nil, malformed("STS body is not a form: %v", err)
	}
	for k, v := range c.URL.Query() {
		form[k] = append(form[k], v...)
	}
	switch op := form.Get("Action"); op {
	case "GetCallerIdentity":
		return nil, nil
	case "AssumeRole":
		role := form.Get("RoleArn")
		if role == "" {
			return nil, malformed("AssumeRole without RoleArn")
		}
		var tags map[string]string
		for i := 1; ; i++ {
			k := form.Get(fmt.Sprintf("Tags.member.%d.Key", i))
			if k == "" {
				break
			}
			if tags == nil {
				tags = map[string]string{}
			}
			tags[k] = form.Get(fmt.Sprintf("Tags.member.%d.Value", i))
		}
		var transitive []string
		for i := 1; ; i++ {
			k := form.Get(fmt.Sprintf("TransitiveTagKeys.member.%d", i))
			if k == "" {
				break
			}
			transitive = append(transitive, k)
		}
		return AssumeRoleRequests(env, role, form.Get("RoleSessionName"), tags, transitive, form.Get("SourceIdentity"), c.TLS), nil
	default:
		return nil, unsupported("sts:"+op, "*", "the local stack does not derive STS %s", op)
	}
}

// AssumeRoleRequests are the questions an AssumeRole of roleARN asks: sts:AssumeRole
// with sts:RoleSessionName, aws:RequestTag/…, aws:TagKeys, sts:TransitiveTagKeys and
// sts:SourceIdentity as set; sts:TagSession when tags are set; sts:SetSourceIdentity
// when a source identity is.
func AssumeRoleRequests(env Env, roleARN, sessionName string, tags map[string]string, transitive []string, sourceIdentity string, tls bool) []identity.Request {
	tagCtx := map[string][]string{}
	if len(tags) > 0 {
		keys := make([]string, 0, len(tags))
		for k, v := range tags {
			tagCtx[keyRequestTag+k] = []string{v}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		tagCtx[keyTagKeys] = keys
	}
	if len(transitive) > 0 {
		tagCtx[keyTransitiveTagKeys] = append([]string(nil), transitive...)
	}
	assume := map[string][]string{}
	for k, v := range tagCtx {
		assume[k] = v
	}
	if sessionName != "" {
		assume[keyRoleSessionName] = []string{sessionName}
	}
	if sourceIdentity != "" {
		assume[keySourceIdentity] = []string{sourceIdentity}
	}
	out := []identity.Request{env.request(tls, "sts:AssumeRole", roleARN, assume)}
	if len(tags) > 0 {
		out = append(out, env.request(tls, "sts:TagSession", roleARN, tagCtx))
	}
	if sourceIdentity != "" {
		out = append(out, env.request(tls, "sts:SetSourceIdentity", roleARN, map[string][]string{keySourceIdentity: {sourceIdentity}}))
	}
	return out
}
