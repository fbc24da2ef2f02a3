package s3local

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/johannesboyne/gofakes3"
)

// conditions serves S3's conditional writes, atomically with every other write of the
// same key: each request that writes or deletes a key holds that key's lock from its
// check to its commit, so two conditional writes of one key can never both pass.
//
// What S3 documents, and what this layer adds to gofakes3 v1.2.0 (which checks a plain
// PutObject's If-Match and If-None-Match: * itself, inside its backend's lock):
//
//   - PutObject, CopyObject (the destination) and CompleteMultipartUpload: If-Match
//     <etag> writes only over an object with that ETag, If-None-Match: * only when no
//     object has the key; otherwise 412 PreconditionFailed and nothing is written
//     (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html,
//     https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html,
//     https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html).
//     gofakes3 checks neither on CopyObject nor on CompleteMultipartUpload.
//   - If-None-Match with any value but "*": S3 answers 501 NotImplemented ("A header
//     you provided implies functionality that is not implemented", as reported in
//     aws/aws-sdk-ruby#3144); gofakes3 ignores it and writes.
//   - DeleteObject with If-Match, and DeleteObjects with an <ETag> per object (S3's
//     conditional deletes, https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html):
//     not implemented here, and refused with 501 NotImplemented rather than ignored,
//     since gofakes3 would delete unconditionally.
//
// ETags are compared as gofakes3's reads report them (the hex MD5 of the stored
// bytes). gofakes3 answers CompleteMultipartUpload with an S3-style "<md5>-<parts>"
// ETag but stores and reports the MD5 of the whole body, so a condition must name the
// ETag a HEAD or GET reports.
type conditions struct {
	backend gofakes3.Backend
	next    http.Handler
	locks   keyLocks
}

func (c *conditions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bucket, key := splitPath(r.URL.Path)
	q := r.URL.Query()
	switch {
	case bucket == "":
		c.next.ServeHTTP(w, r)
	case key == "" && r.Method == http.MethodPost && q.Has("delete"):
		c.deleteObjects(w, r, bucket)
	case key == "":
		c.next.ServeHTTP(w, r)
	case r.Method == http.MethodPut && q.Has("uploadId") && r.Header.Get("X-Amz-Copy-Source") != "":
		c.uploadPartCopy(w, r)
	case r.Method == http.MethodPut && !q.Has("uploadId"): // PutObject, CopyObject; not UploadPart
		c.write(w, r, bucket, key)
	case r.Method == http.MethodPost && q.Has("uploadId"): // CompleteMultipartUpload
		c.write(w, r, bucket, key)
	case r.Method == http.MethodDelete && !q.Has("uploadId"): // DeleteObject; not AbortMultipartUpload
		if r.Header.Get("If-Match") != "" || r.Header.Get("X-Amz-If-Match-Size") != "" || r.Header.Get("X-Amz-If-Match-Last-Modified-Time") != "" {
			writeError(w, r, notImplemented("conditional DeleteObject is not supported by the local stack"))
			return
		}
		defer c.locks.lock(bucket + "/" + key)()
		c.next.ServeHTTP(w, r)
	default:
		c.next.ServeHTTP(w, r)
	}
}

// write serves a request that writes bucket/key, holding the key's lock throughout.
func (c *conditions) write(w http.ResponseWriter, r *http.Request, bucket, key string) {
	ifMatch, ifNoneMatch := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	if ifNoneMatch != "" && ifNoneMatch != "*" {
		writeError(w, r, notImplemented("A header you provided implies functionality that is not implemented"))
		return
	}
	locked := []string{bucket + "/" + key}
	srcBucket, srcKey, copying := copySourceOf(r)
	if copying {
		locked = append(locked, srcBucket+"/"+srcKey)
	}
	defer c.locks.lock(locked...)()
	if copying {
		if e := c.checkSource(r, srcBucket, srcKey); e != nil {
			writeError(w, r, e)
			return
		}
	}
	plainPut := r.Method == http.MethodPut && !copying
	if (ifMatch != "" || ifNoneMatch != "") && !plainPut { // gofakes3 checks a plain PUT itself
		if e := c.check(bucket, key, ifMatch, ifNoneMatch); e != nil {
			writeError(w, r, e)
			return
		}
	}
	c.next.ServeHTTP(w, r)
}

// check evaluates the conditions against the key's current object; nil lets the write
// go on (a missing bucket included: gofakes3 answers NoSuchBucket).
func (c *conditions) check(bucket, key, ifMatch, ifNoneMatch string) *s3Error {
	cur := &gofakes3.ConditionalObjectInfo{}
	obj, err := c.backend.HeadObject(bucket, key)
	switch {
	case err == nil:
		cur.Exists, cur.Hash = true, obj.Hash
		if obj.Contents != nil {
			obj.Contents.Close()
		}
	case gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchBucket):
		return nil
	case !gofakes3.HasErrorCode(err, gofakes3.ErrNoSuchKey):
		return &s3Error{status: http.StatusInternalServerError, code: "InternalError", msg: "We encountered an internal error. Please try again."}
	}
	cond := &gofakes3.PutConditions{}
	if ifMatch != "" {
		cond.IfMatch = &ifMatch
	}
	if ifNoneMatch != "" {
		cond.IfNoneMatch = &ifNoneMatch
	}
	if err := gofakes3.CheckPutConditions(cond, cur); err != nil {
		which := "If-Match"
		if ifNoneMatch != "" && cur.Exists {
			which = "If-None-Match"
		}
		return preconditionFailed(which)
	}
	return nil
}

// deleteObjects serves DeleteObjects holding the lock of every key it names, taken in
// key order so that no two requests wait for each other.
func (c *conditions) deleteObjects(w http.ResponseWriter, r *http.Request, bucket string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPostBytes+1))
	r.Body.Close()
	if err != nil || len(body) > MaxPostBytes {
		writeError(w, r, &s3Error{status: http.StatusBadRequest, code: "MalformedXML",
			msg: "The XML you provided was not well-formed or did not validate against our published schema"})
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var in struct {
		Objects []struct {
			Key  string `xml:"Key"`
			ETag string `xml:"ETag"`
		} `xml:"Object"`
	}
	if xml.Unmarshal(body, &in) != nil {
		c.next.ServeHTTP(w, r) // gofakes3 answers the malformed body
		return
	}
	keys := make([]string, 0, len(in.Objects))
	for _, o := range in.Objects {
		if o.ETag != "" {
			writeError(w, r, notImplemented("conditional DeleteObjects (an ETag per object) is not supported by the local stack"))
			return
		}
		keys = append(keys, bucket+"/"+o.Key)
	}
	defer c.locks.lock(keys...)()
	c.next.ServeHTTP(w, r)
}

// splitPath returns the bucket and key of a path-style request path.
func splitPath(p string) (bucket, key string) {
	if u, err := url.PathUnescape(p); err == nil {
		p = u
	}
	bucket, key, _ = strings.Cut(strings.TrimPrefix(p, "/"), "/")
	return bucket, key
}

func preconditionFailed(condition string) *s3Error {
	return &s3Error{status: http.StatusPreconditionFailed, code: "PreconditionFailed",
		msg: "At least one of the pre-conditions you specified did not hold", condition: condition}
}

func notImplemented(msg string) *s3Error {
	return &s3Error{status: http.StatusNotImplemented, code: "NotImplemented", msg: msg}
}

// keyLocks is one mutex per key, created on demand and dropped when unused.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	refs int
}

// lock takes the locks of keys (deduplicated, in order) and returns their release.
func (l *keyLocks) lock(keys ...string) (unlock func()) {
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	held := make([]*keyLock, len(keys))
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*keyLock{}
	}
	for i, k := range keys {
		kl := l.m[k]
		if kl == nil {
			kl = &keyLock{}
			l.m[k] = kl
		}
		kl.refs++
		held[i] = kl
	}
	l.mu.Unlock()
	for _, kl := range held {
		kl.Lock()
	}
	return func() {
		for _, kl := range held {
			kl.Unlock()
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for i, kl := range held {
			if kl.refs--; kl.refs == 0 {
				delete(l.m, keys[i])
			}
		}
	}
}
