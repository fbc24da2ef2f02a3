package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	ops "github.com/sandgate/sandgate/internal/admin"
	"github.com/sandgate/sandgate/internal/s3bucket"
)

// The source bucket's own keys, for a source in another store (an R2 bucket of the
// original design): read from the environment, never a flag.
const (
	EnvSourceAccessKeyID     = "SANDGATE_SOURCE_ACCESS_KEY_ID"
	EnvSourceSecretAccessKey = "SANDGATE_SOURCE_SECRET_ACCESS_KEY"
)

func (r *runner) importBucket(fl *flag.FlagSet) execution {
	source := fl.String("source-bucket", "", "the original design's bucket (required)")
	endpoint := fl.String("source-endpoint", "", "the source's S3 endpoint when it is another store (an R2 bucket: https://<account>.r2.cloudflarestorage.com); its keys from $"+EnvSourceAccessKeyID+" and $"+EnvSourceSecretAccessKey)
	region := fl.String("source-region", "", "the source's signing region (R2: auto)")
	pathStyle := fl.Bool("source-path-style", false, "address the source bucket path-style")
	flatTo := fl.String("flat-to", "", "the `userId` who receives the bucket root's flat tree (config/, workspace/); without it the flat tree is reported and left")
	dry := fl.Bool("dry-run", false, "report what maps where, what is skipped and why; copy nothing")
	asJSON := fl.Bool("json", false, "print JSON")
	return execution{
		check: func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if *source == "" {
				return errors.New("-source-bucket is required")
			}
			return nil
		},
		run: func(ctx context.Context) error {
			opts := s3bucket.Options{UsePathStyle: *pathStyle, Region: *region}
			sameStore := *endpoint == ""
			if sameStore {
				opts = r.cfg.Storage
			} else {
				opts.AccessKeyID, opts.SecretAccessKey = os.Getenv(EnvSourceAccessKeyID), os.Getenv(EnvSourceSecretAccessKey)
				if opts.AccessKeyID == "" || opts.SecretAccessKey == "" {
					return fmt.Errorf("-source-endpoint: set $%s and $%s to the source's keys", EnvSourceAccessKeyID, EnvSourceSecretAccessKey)
				}
			}
			srcClient := s3bucket.NewClient(r.aws, opts)
			if !sameStore {
				srcClient = s3.New(srcClient.Options(), func(o *s3.Options) { o.BaseEndpoint = aws.String(*endpoint) })
			}
			imo := ops.ImportOptions{Source: s3bucket.New(srcClient, *source), SourceName: *source, FlatTo: *flatTo, DryRun: *dry}
			if sameStore && r.cfg.StorageSecret == "" {
				// Source and destination share a store and its credentials: copies stay
				// in the store.
				imo.Copier = &serverCopy{client: s3bucket.NewClient(r.aws, r.cfg.Storage), src: *source, dst: r.cfg.Bucket}
			}
			imp, err := r.admin.ImportBucket(ctx, imo)
			if err != nil {
				return err
			}
			if *asJSON {
				return r.printJSON(imp)
			}
			r.printImport(imp, imo.Copier != nil)
			return nil
		},
	}
}

func (r *runner) printImport(imp *ops.Import, serverSide bool) {
	out := r.stdout
	how := "objects read and written"
	if serverSide {
		how = "server-side copies"
	}
	if imp.DryRun {
		how = "dry run, nothing copied; it would use " + how
	}
	fmt.Fprintf(out, "import of s3://%s into %s (%s)\n", imp.Source, r.where, how)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, u := range imp.Users {
		if u.Skipped != "" {
			fmt.Fprintf(w, "%s\tfrom %s\tskipped: %s\n", u.UserID, u.From, u.Skipped)
			continue
		}
		marker := ""
		if u.Marker {
			marker = ", .last-sync written"
			if imp.DryRun {
				marker = ", .last-sync to write"
			}
		}
		fmt.Fprintf(w, "%s\tfrom %s\t%d file(s)%s\n", u.UserID, u.From, len(u.Files), marker)
		for _, f := range u.Files {
			fmt.Fprintf(w, "  %s\t→ %s\t%s\n", f.Source, f.Dest, f.Outcome)
		}
	}
	for _, s := range imp.Skipped {
		fmt.Fprintf(w, "%s\tskipped\t%s\n", s.Key, s.Reason)
	}
	w.Flush()
	fmt.Fprintf(out, "%d copied (%d bytes), %d already present, %d conflict(s) left alone, %d source key(s) skipped\n",
		imp.Copied, imp.Bytes, imp.Present, imp.Conflicts, len(imp.Skipped))
}

// serverCopy copies within one store (S3 CopyObject), replacing the metadata.
type serverCopy struct {
	client   *s3.Client
	src, dst string
}

func (c *serverCopy) Copy(ctx context.Context, srcKey, dstKey string, meta map[string]string) (string, error) {
	out, err := c.client.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket: aws.String(c.dst), Key: aws.String(dstKey),
		CopySource:        aws.String(url.PathEscape(c.src) + "/" + escapeKey(srcKey)),
		MetadataDirective: types.MetadataDirectiveReplace, Metadata: meta,
	})
	if err != nil {
		return "", fmt.Errorf("copy %s to %s: %w", srcKey, dstKey, err)
	}
	if out.CopyObjectResult == nil {
		return "", nil
	}
	return strings.Trim(aws.ToString(out.CopyObjectResult.ETag), `"`), nil
}

// escapeKey URL-encodes a key for CopySource, keeping its slashes.
func escapeKey(k string) string {
	parts := strings.Split(k, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
