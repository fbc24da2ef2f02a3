package iampolicy

import (
	"encoding/xml"
	"net/http"
	"net/url"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// S3 condition keys.
const (
	keyS3Prefix    = "s3:prefix"
	keyS3Delimiter = "s3:delimiter"
	keyS3MaxKeys   = "s3:max-keys"
)

// s3Headers are request headers S3 exposes as condition keys of writes.
var s3Headers = map[string]string{
	"X-Amz-Acl":                    "s3:x-amz-acl",
	"X-Amz-Server-Side-Encryption": "s3:x-amz-server-side-encryption",
	"X-Amz-Storage-Class":          "s3:x-amz-storage-class",
	"X-Amz-Copy-Source":            "s3:x-amz-copy-source",
	"X-Amz-Metadata-Directive":     "s3:x-amz-metadata-directive",
	"If-None-Match":                "s3:if-none-match",
	"If-Match":                     "s3:if-match",
}

// Bucket subresources the derivation does not know: a request naming one is refused.
var s3UnknownBucketSubresources = []string{"acl", "policy", "policyStatus", "cors", "lifecycle",
	"tagging", "encryption", "website", "logging", "notification", "replication", "requestPayment",
	"accelerate", "analytics", "inventory", "metrics", "intelligent-tiering", "ownershipControls",
	"publicAccessBlock", "object-lock", "session"}

// S3 derives what a path-style S3 request asks (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html):
// GetObject and HeadObject need s3:GetObject (s3:GetObjectVersion with a versionId),
// PutObject, UploadPart and the multipart calls s3:PutObject, CopyObject s3:PutObject
// on the target and s3:GetObject on the source, DeleteObject s3:DeleteObject and
// DeleteObjects s3:DeleteObject for each key; ListObjects(V2) and HeadBucket need
// s3:ListBucket on the bucket with s3:prefix, s3:delimiter and s3:max-keys as sent.
// Every request carries s3:authType, s3:signatureversion, s3:x-amz-content-sha256
// and s3:ResourceAccount; writes the x-amz-* headers S3 exposes as keys.
func S3(env Env, c Call) ([]identity.Request, error) {
	bucket, key, objectLevel := s3Path(c.URL.Path)
	q := c.URL.Query()
	base := s3Context(env, c)
	req := func(action, arn string, extra map[string][]string) identity.Request {
		ctx := map[string][]string{}
		for k, v := range base {
			ctx[k] = v
		}
		for k, v := range extra {
			ctx[k] = v
		}
		return env.request(c.TLS, action, arn, ctx)
	}
	if bucket == "" {
		if c.Method == http.MethodGet {
			return []identity.Request{req("s3:ListAllMyBuckets", "*", nil)}, nil
		}
		return nil, unsupported("s3:"+c.Method, "*", "the local stack does not derive S3 %s /", c.Method)
	}
	bucketARN := "arn:" + env.partition() + ":s3:::" + bucket
	objectARN := bucketARN + "/" + key
	if !objectLevel {
		for _, sub := range s3UnknownBucketSubresources {
			if q.Has(sub) {
				return nil, unsupported("s3:?", bucketARN, "the local stack does not derive S3 %s ?%s", c.Method, sub)
			}
		}
		switch c.Method {
		case http.MethodGet:
			switch {
			case q.Has("location"):
				return []identity.Request{req("s3:GetBucketLocation", bucketARN, nil)}, nil
			case q.Has("versioning"):
				return []identity.Request{req("s3:GetBucketVersioning", bucketARN, nil)}, nil
			case q.Has("uploads"):
				return []identity.Request{req("s3:ListBucketMultipartUploads", bucketARN, nil)}, nil
			case q.Has("versions"):
				return []identity.Request{req("s3:ListBucketVersions", bucketARN, listKeys(q))}, nil
			}
			return []identity.Request{req("s3:ListBucket", bucketARN, listKeys(q))}, nil
		case http.MethodHead:
			return []identity.Request{req("s3:ListBucket", bucketARN, nil)}, nil
		case http.MethodPut:
			if q.Has("versioning") {
				return []identity.Request{req("s3:PutBucketVersioning", bucketARN, nil)}, nil
			}
			return []identity.Request{req("s3:CreateBucket", bucketARN, nil)}, nil
		case http.MethodDelete:
			return []identity.Request{req("s3:DeleteBucket", bucketARN, nil)}, nil
		case http.MethodPost:
			if q.Has("delete") {
				var del struct {
					Objects []struct {
						Key       string `xml:"Key"`
						VersionID string `xml:"VersionId"`
					} `xml:"Object"`
				}
				if err := xml.Unmarshal(c.Body, &del); err != nil {
					return nil, malformed("DeleteObjects body: %v", err)
				}
				var out []identity.Request
				for _, o := range del.Objects {
					action := "s3:DeleteObject"
					if o.VersionID != "" {
						action = "s3:DeleteObjectVersion"
					}
					out = append(out, req(action, bucketARN+"/"+o.Key, nil))
				}
				return out, nil
			}
		}
		return nil, unsupported("s3:?", bucketARN, "the local stack does not derive S3 bucket %s %s", c.Method, c.URL.RawQuery)
	}

	versioned := q.Get("versionId") != ""
	switch c.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case c.Method == http.MethodGet && q.Has("uploadId"):
			return []identity.Request{req("s3:ListMultipartUploadParts", objectARN, nil)}, nil
		case c.Method == http.MethodGet && q.Has("tagging"):
			return []identity.Request{req(versionedAction("s3:GetObjectTagging", versioned), objectARN, nil)}, nil
		case c.Method == http.MethodGet && (q.Has("acl") || q.Has("attributes") || q.Has("retention") || q.Has("legal-hold") || q.Has("torrent")):
			return nil, unsupported("s3:?", objectARN, "the local stack does not derive S3 GET object subresource %s", c.URL.RawQuery)
		}
		return []identity.Request{req(versionedAction("s3:GetObject", versioned), objectARN, nil)}, nil
	case http.MethodPut:
		switch {
		case q.Has("tagging"):
			return []identity.Request{req(versionedAction("s3:PutObjectTagging", versioned), objectARN, nil)}, nil
		case q.Has("acl") || q.Has("retention") || q.Has("legal-hold"):
			return nil, unsupported("s3:?", objectARN, "the local stack does not derive S3 PUT object subresource %s", c.URL.RawQuery)
		}
		out := []identity.Request{req("s3:PutObject", objectARN, writeKeys(c.Header))}
		if src := c.Header.Get("X-Amz-Copy-Source"); src != "" {
			srcARN, srcVersioned, err := copySource(env, src)
			if err != nil {
				return nil, err
			}
			out = append(out, req(versionedAction("s3:GetObject", srcVersioned), srcARN, nil))
		}
		return out, nil
	case http.MethodPost:
		if q.Has("uploads") || q.Has("uploadId") {
			return []identity.Request{req("s3:PutObject", objectARN, writeKeys(c.Header))}, nil
		}
	case http.MethodDelete:
		switch {
		case q.Has("uploadId"):
			return []identity.Request{req("s3:AbortMultipartUpload", objectARN, nil)}, nil
		case q.Has("tagging"):
			return []identity.Request{req(versionedAction("s3:DeleteObjectTagging", versioned), objectARN, nil)}, nil
		}
		return []identity.Request{req(versionedAction("s3:DeleteObject", versioned), objectARN, nil)}, nil
	}
	return nil, unsupported("s3:?", objectARN, "the local stack does not derive S3 object %s %s", c.Method, c.URL.RawQuery)
}

// S3MissingKey is the second question of a GetObject or HeadObject whose key does not
// exist: S3 answers 404 only when the caller may also list the bucket, 403 otherwise.
// It asks s3:ListBucket on the bucket with s3:prefix set to the key (AWS does not
// document the context of this check; the key as prefix is the local stack's
// reading, so a listing permission limited to a prefix that covers the key yields 404).
func S3MissingKey(env Env, c Call, bucket, key string) identity.Request {
	ctx := s3Context(env, c)
	ctx[keyS3Prefix] = []string{key}
	return env.request(c.TLS, "s3:ListBucket", "arn:"+env.partition()+":s3:::"+bucket, ctx)
}

// s3Path splits a path-style path into bucket and key; objectLevel is false for a
// bucket (with or without its trailing slash).
func s3Path(p string) (bucket, key string, objectLevel bool) {
	p = strings.TrimPrefix(p, "/")
	bucket, key, _ = strings.Cut(p, "/")
	return bucket, key, key != ""
}

func s3Context(env Env, c Call) map[string][]string {
	ctx := map[string][]string{
		"s3:signatureversion": {"AWS4-HMAC-SHA256"},
		"s3:authType":         {"REST-HEADER"},
	}
	if env.Account != "" {
		ctx["s3:ResourceAccount"] = []string{env.Account}
	}
	if c.URL.Query().Get("X-Amz-Signature") != "" {
		ctx["s3:authType"] = []string{"REST-QUERY-STRING"}
	}
	if v := c.Header.Get("X-Amz-Content-Sha256"); v != "" {
		ctx["s3:x-amz-content-sha256"] = []string{v}
	}
	return ctx
}

// listKeys are a listing's condition keys, each only when the request sets it.
func listKeys(q url.Values) map[string][]string {
	ctx := map[string][]string{}
	for param, key := range map[string]string{"prefix": keyS3Prefix, "delimiter": keyS3Delimiter, "max-keys": keyS3MaxKeys} {
		if q.Has(param) {
			ctx[key] = []string{q.Get(param)}
		}
	}
	return ctx
}

func writeKeys(h http.Header) map[string][]string {
	ctx := map[string][]string{}
	for header, key := range s3Headers {
		if v := h.Get(header); v != "" {
			ctx[key] = []string{v}
		}
	}
	return ctx
}

func versionedAction(action string, versioned bool) string {
	if versioned {
		return action + "Version"
	}
	return action
}

// copySource parses x-amz-copy-source ("/bucket/key?versionId=…", URL-encoded).
func copySource(env Env, src string) (string, bool, error) {
	path, query, _ := strings.Cut(src, "?")
	path, err := url.PathUnescape(strings.TrimPrefix(path, "/"))
	if err != nil {
		return "", false, malformed("x-amz-copy-source %q: %v", src, err)
	}
	if strings.HasPrefix(path, "arn:") {
		return "", false, unsupported("s3:GetObject", path, "the local stack does not derive access point copy sources")
	}
	bucket, key, ok := strings.Cut(path, "/")
	if !ok || bucket == "" || key == "" {
		return "", false, malformed("x-amz-copy-source %q names no object", src)
	}
	q, _ := url.ParseQuery(query)
	return "arn:" + env.partition() + ":s3:::" + bucket + "/" + key, q.Get("versionId") != "", nil
}
