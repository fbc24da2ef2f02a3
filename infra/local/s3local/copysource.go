package s3local

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/johannesboyne/gofakes3"
)

// What this layer adds to gofakes3 v1.2.0's copies, as S3 documents them
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html,
// https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPartCopy.html) and R2
// accepts them:
//   - x-amz-copy-source-if-match and x-amz-copy-source-if-none-match on CopyObject and
//     UploadPartCopy: 412 PreconditionFailed when the source's ETag does not (does)
//     match, nothing written; gofakes3 ignores both.
//   - UploadPartCopy (a part's bytes taken from an existing object, whole or
//     x-amz-copy-source-range), which gofakes3 does not serve: the range is read from
//     the backend and handed to gofakes3 as an UploadPart of those bytes, and the
//     answer is UploadPartCopy's CopyPartResult.

// copySourceOf parses x-amz-copy-source ("[/]bucket/key[?versionId=…]", URL-encoded).
func copySourceOf(r *http.Request) (bucket, key string, ok bool) {
	src := r.Header.Get("X-Amz-Copy-Source")
	if src == "" {
		return "", "", false
	}
	src, _, _ = strings.Cut(src, "?")
	if u, err := url.PathUnescape(src); err == nil {
		src = u
	}
	bucket, key, ok = strings.Cut(strings.TrimPrefix(src, "/"), "/")
	return bucket, key, ok && bucket != "" && key != ""
}

// checkSource evaluates the copy-source conditions against the source's current
// object; nil lets the copy go on (a missing source included: gofakes3 answers it).
func (c *conditions) checkSource(r *http.Request, bucket, key string) *s3Error {
	ifMatch, ifNoneMatch := r.Header.Get("X-Amz-Copy-Source-If-Match"), r.Header.Get("X-Amz-Copy-Source-If-None-Match")
	if ifMatch == "" && ifNoneMatch == "" {
		return nil
	}
	obj, err := c.backend.HeadObject(bucket, key)
	if err != nil {
		return nil
	}
	if obj.Contents != nil {
		obj.Contents.Close()
	}
	etag := fmt.Sprintf("%x", obj.Hash)
	if ifMatch != "" && strings.Trim(ifMatch, `"`) != etag {
		return preconditionFailed("x-amz-copy-source-If-Match")
	}
	if ifNoneMatch != "" && strings.Trim(ifNoneMatch, `"`) == etag {
		return preconditionFailed("x-amz-copy-source-If-None-Match")
	}
	return nil
}

var copyRange = regexp.MustCompile(`^bytes=(\d+)-(\d+)$`)

// uploadPartCopy serves UploadPartCopy as an UploadPart of the source's bytes.
func (c *conditions) uploadPartCopy(w http.ResponseWriter, r *http.Request) {
	bucket, key, ok := copySourceOf(r)
	if !ok {
		writeError(w, r, &s3Error{status: http.StatusBadRequest, code: "InvalidArgument", msg: "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"})
		return
	}
	defer c.locks.lock(bucket + "/" + key)()
	if e := c.checkSource(r, bucket, key); e != nil {
		writeError(w, r, e)
		return
	}
	var rng *gofakes3.ObjectRangeRequest
	if h := r.Header.Get("X-Amz-Copy-Source-Range"); h != "" {
		m := copyRange.FindStringSubmatch(h)
		if m == nil {
			writeError(w, r, &s3Error{status: http.StatusBadRequest, code: "InvalidArgument", msg: "The x-amz-copy-source-range value must be of the form bytes=first-last"})
			return
		}
		start, _ := strconv.ParseInt(m[1], 10, 64)
		end, _ := strconv.ParseInt(m[2], 10, 64)
		rng = &gofakes3.ObjectRangeRequest{Start: start, End: end}
	}
	obj, err := c.backend.GetObject(bucket, key, rng)
	if err != nil {
		writeError(w, r, &s3Error{status: http.StatusNotFound, code: "NoSuchKey", msg: "The specified key does not exist."})
		return
	}
	body, err := io.ReadAll(obj.Contents)
	obj.Contents.Close()
	if err != nil {
		writeError(w, r, &s3Error{status: http.StatusInternalServerError, code: "InternalError", msg: "We encountered an internal error. Please try again."})
		return
	}
	part := r.Clone(r.Context())
	for h := range part.Header {
		if strings.HasPrefix(strings.ToLower(h), "x-amz-copy-source") {
			part.Header.Del(h)
		}
	}
	part.Body, part.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	part.Header.Set("Content-Length", strconv.Itoa(len(body)))
	rec := httptest.NewRecorder()
	c.next.ServeHTTP(rec, part)
	if rec.Code != http.StatusOK {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName xml.Name `xml:"CopyPartResult"`
		ETag    string   `xml:"ETag"`
	}{ETag: rec.Header().Get("ETag")})
}
