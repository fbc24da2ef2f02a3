package preflight

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// bucketRegionHeader names the bucket's region on S3's answers to HeadBucket, the
// 301 of a request to another region's endpoint included
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html).
const bucketRegionHeader = "X-Amz-Bucket-Region"

// checkBucket checks BucketName on AWS S3: it exists and this account may read it
// (s3:ListBucket, through HeadBucket), it is in the region the stack addresses it in
// (StorageRegion, else the stack's), all four public access block settings are on
// (s3:GetBucketPublicAccessBlock), and reports versioning (s3:GetBucketVersioning).
// With StorageEndpoint set the bucket is not on AWS S3, and the check is skipped.
func (c *Checker) checkBucket(ctx context.Context) Result {
	if ep, _ := c.Stack.Value(ParamStorageEndpoint); ep != "" {
		return Result{Status: Skip, Summary: "StorageEndpoint is set (" + ep + "): the bucket is not on AWS S3; preflight checks AWS S3 buckets only"}
	}
	bucket, skip := c.need(ParamBucketName)
	if skip != nil {
		return *skip
	}
	want, _ := c.Stack.Value(ParamStorageRegion)
	if want == "" {
		want = c.Stack.Region
	}
	head, err := c.S3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
	region := ""
	if head != nil {
		region = aws.ToString(head.BucketRegion)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		region = re.Response.Header.Get(bucketRegionHeader)
	}
	var notFound *s3types.NotFound
	switch status := httpStatus(err); {
	case err == nil:
	case region != "" && region != want && (status == http.StatusMovedPermanently || status == http.StatusBadRequest):
		// Asked at the wrong region's endpoint: S3 names the right one.
	case errors.As(err, &notFound) || errorCode(err) == "NoSuchBucket" || status == http.StatusNotFound:
		create := fmt.Sprintf("aws s3api create-bucket --bucket %s --region %s", bucket, want)
		if want != "us-east-1" {
			create += " --create-bucket-configuration LocationConstraint=" + want
		}
		return Result{Status: Fail, Summary: fmt.Sprintf("no bucket %s", bucket), Fix: create}
	case isDenied(err):
		return Result{Status: Fail,
			Summary: fmt.Sprintf("bucket %s: access denied to s3:ListBucket: it belongs to another account, or these credentials may not list it", bucket),
			Fix:     "choose a bucket of this account (bucket names are global), or run preflight with the credentials you deploy with"}
	default:
		return failed(CheckBucket, "s3:HeadBucket (s3:ListBucket)", err)
	}
	if region != "" && region != want {
		return Result{Status: Fail,
			Summary: fmt.Sprintf("bucket %s is in %s, but the stack would address it in %s", bucket, region, want),
			Fix:     "set StorageRegion=" + region}
	}
	inRegion := func(o *s3.Options) {
		if region != "" {
			o.Region = region
		}
	}

	res := Result{Status: OK}
	pab, err := c.S3.GetPublicAccessBlock(ctx, &s3.GetPublicAccessBlockInput{Bucket: aws.String(bucket)}, inRegion)
	fix := "aws s3api put-public-access-block --bucket " + bucket +
		" --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true"
	blocked := ""
	switch {
	case errorCode(err) == "NoSuchPublicAccessBlockConfiguration":
		res.Status = Fail
		blocked = "has no public access block"
		res.Fix = fix
	case err != nil:
		r := failed(CheckBucket, "s3:GetBucketPublicAccessBlock", err)
		r.Summary = fmt.Sprintf("bucket %s: %s", bucket, r.Summary)
		return r
	default:
		var off []string
		cfg := pab.PublicAccessBlockConfiguration
		if cfg == nil {
			cfg = &s3types.PublicAccessBlockConfiguration{}
		}
		for name, on := range map[string]*bool{"BlockPublicAcls": cfg.BlockPublicAcls, "IgnorePublicAcls": cfg.IgnorePublicAcls,
			"BlockPublicPolicy": cfg.BlockPublicPolicy, "RestrictPublicBuckets": cfg.RestrictPublicBuckets} {
			if !aws.ToBool(on) {
				off = append(off, name)
			}
		}
		sort.Strings(off)
		if len(off) > 0 {
			res.Status = Fail
			blocked = "blocks public access only in part (off: " + strings.Join(off, ", ") + ")"
			res.Fix = fix
		} else {
			blocked = "blocks all public access"
		}
	}

	versioning := "versioning could not be read"
	v, err := c.S3.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: aws.String(bucket)}, inRegion)
	switch {
	case err != nil:
		res.Details = append(res.Details, "versioning: "+failed(CheckBucket, "s3:GetBucketVersioning", err).Summary)
	case v.Status == s3types.BucketVersioningStatusEnabled:
		versioning = "versioning Enabled"
	case v.Status == s3types.BucketVersioningStatusSuspended:
		versioning = "versioning Suspended"
	default:
		versioning = "versioning never enabled"
	}
	if v == nil || v.Status != s3types.BucketVersioningStatusEnabled {
		res.Details = append(res.Details, "versioning keeps what a sync overwrote or deleted recoverable: aws s3api put-bucket-versioning --bucket "+bucket+" --versioning-configuration Status=Enabled (with a lifecycle rule expiring noncurrent versions)")
	}
	where := region
	if where == "" {
		where = want
	}
	res.Summary = fmt.Sprintf("bucket %s (%s) %s; %s", bucket, where, blocked, versioning)
	return res
}
