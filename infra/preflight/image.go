package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	ecrtypes "github.com/aws/aws-sdk-go-v2/service/ecr/types"
)

// Manifest media types ECR stores (https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-manifest-formats.html):
// the two index formats list one manifest per platform; the two manifest formats are
// one platform, named in the image's configuration.
const (
	mediaOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
)

// configFetchTimeout bounds reading a single-platform image's configuration.
const configFetchTimeout = 30 * time.Second

// maxConfigBytes bounds the image configuration read (they are a few KiB).
const maxConfigBytes = 4 << 20

// ecrHost matches a private ECR registry: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn].
var ecrHost = regexp.MustCompile(`^([0-9]{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$`)

// ImageRef is a container image reference split into its parts.
type ImageRef struct {
	Registry, Repository, Tag, Digest string
	// Account and Region are the registry's when it is a private ECR registry.
	Account, Region string
}

// ParseImageRef splits registry/repository[:tag][@digest]. Without a tag or a digest
// the tag is "latest", as Docker and ECS read it.
func ParseImageRef(s string) (ImageRef, error) {
	var r ImageRef
	registry, rest, ok := strings.Cut(s, "/")
	if !ok || registry == "" || rest == "" || !strings.ContainsAny(registry, ".:") && registry != "localhost" {
		return r, fmt.Errorf("%q is not registry/repository[:tag][@digest]", s)
	}
	r.Registry = registry
	rest, r.Digest, _ = strings.Cut(rest, "@")
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		rest, r.Tag = rest[:i], rest[i+1:]
	}
	r.Repository = rest
	if r.Repository == "" || strings.Contains(s, "@") && !strings.HasPrefix(r.Digest, "sha256:") {
		return r, fmt.Errorf("%q is not registry/repository[:tag][@digest]", s)
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	if m := ecrHost.FindStringSubmatch(registry); m != nil {
		r.Account, r.Region = m[1], m[2]
	}
	return r, nil
}

// Pinned is the reference by digest.
func (r ImageRef) Pinned(digest string) string {
	return r.Registry + "/" + r.Repository + "@" + digest
}

// imageManifest is what the check reads of a manifest or an index.
type imageManifest struct {
	MediaType string `json:"mediaType"`
	Manifests []struct {
		Digest   string `json:"digest"`
		Platform *struct {
			Architecture string `json:"architecture"`
			OS           string `json:"os"`
			Variant      string `json:"variant"`
		} `json:"platform"`
	} `json:"manifests"`
	Config *struct {
		Digest string `json:"digest"`
	} `json:"config"`
}

// checkSandboxImage finds SandboxImage in ECR (ecr:DescribeImages), reads its manifest
// (ecr:BatchGetImage) and checks that it runs on the task definition's architecture:
// an index must list linux/<arch>; a single manifest's configuration (fetched through
// ecr:GetDownloadUrlForLayer) must name it. It reports the digest, and recommends
// pinning it unless the tag cannot move (an IMMUTABLE repository).
func (c *Checker) checkSandboxImage(ctx context.Context) Result {
	uri, skip := c.need(ParamSandboxImage)
	if skip != nil {
		return *skip
	}
	ref, err := ParseImageRef(uri)
	if err != nil {
		return Result{Status: Fail, Summary: "SandboxImage: " + err.Error(), Fix: "set SandboxImage to the URI make image prints"}
	}
	if ref.Account == "" {
		return Result{Status: Warn,
			Summary: uri + " is not in a private ECR registry: preflight checks ECR images only, and the task execution role may pull from ECR only (or from public registries without credentials)",
			Fix:     "make image (pushes container/ to ECR for linux/arm64 and prints the URI)"}
	}
	var notes []string
	patterns, known, err := c.Stack.PullPatterns(c.account)
	if err != nil {
		notes = append(notes, "the execution role's pull permission could not be read from the template: "+oneLine(err.Error()))
	}
	if err == nil && known {
		repoARN := fmt.Sprintf("arn:%s:ecr:%s:%s:repository/%s", Partition(ref.Region), ref.Region, ref.Account, ref.Repository)
		if !matchesAny(patterns, repoARN, false) {
			return Result{Status: Fail,
				Summary: fmt.Sprintf("%s is in account %s, region %s: the sandbox task's execution role may pull from %s only, so no sandbox would start",
					ref.Repository, ref.Account, ref.Region, strings.Join(patterns, ", ")),
				Fix: fmt.Sprintf("push the image to ECR in account %s, region %s: AWS_REGION=%s make image", c.account, c.Stack.Region, c.Stack.Region)}
		}
	}
	arch := c.Stack.Architecture()
	platform := "linux/" + arch
	repoName := ref.Registry + "/" + ref.Repository
	cl := c.ECR(ref.Region)
	id := ecrtypes.ImageIdentifier{}
	if ref.Digest != "" {
		id.ImageDigest = aws.String(ref.Digest)
	} else {
		id.ImageTag = aws.String(ref.Tag)
	}
	desc, err := cl.DescribeImages(ctx, &ecr.DescribeImagesInput{
		RegistryId: aws.String(ref.Account), RepositoryName: aws.String(ref.Repository), ImageIds: []ecrtypes.ImageIdentifier{id}})
	var noRepo *ecrtypes.RepositoryNotFoundException
	var noImage *ecrtypes.ImageNotFoundException
	switch {
	case errors.As(err, &noRepo):
		return Result{Status: Fail,
			Summary: fmt.Sprintf("no ECR repository %s in account %s, region %s", ref.Repository, ref.Account, ref.Region),
			Fix:     fmt.Sprintf("make image IMAGE_REPO=%s (creates the repository, pushes and prints SandboxImage)", ref.Repository)}
	case errors.As(err, &noImage):
		return Result{Status: Fail,
			Summary: fmt.Sprintf("%s has no image %s", repoName, imageSelector(ref)),
			Fix:     "make image, then set SandboxImage to the URI it prints (aws ecr describe-images --repository-name " + ref.Repository + " lists what is there)"}
	case err != nil:
		return failed(CheckSandboxImage, "ecr:DescribeImages", err)
	case len(desc.ImageDetails) == 0 || aws.ToString(desc.ImageDetails[0].ImageDigest) == "":
		return Result{Status: Fail, Summary: fmt.Sprintf("%s: ECR described no image", uri), Fix: "make image"}
	}
	digest := aws.ToString(desc.ImageDetails[0].ImageDigest)

	got, err := cl.BatchGetImage(ctx, &ecr.BatchGetImageInput{
		RegistryId: aws.String(ref.Account), RepositoryName: aws.String(ref.Repository),
		ImageIds:           []ecrtypes.ImageIdentifier{{ImageDigest: aws.String(digest)}},
		AcceptedMediaTypes: []string{mediaOCIIndex, mediaDockerList, mediaOCIManifest, mediaDockerManifest}})
	if err != nil {
		return failed(CheckSandboxImage, "ecr:BatchGetImage", err)
	}
	if len(got.Images) == 0 {
		reason := "no manifest returned"
		if len(got.Failures) > 0 {
			reason = fmt.Sprintf("%s: %s", got.Failures[0].FailureCode, aws.ToString(got.Failures[0].FailureReason))
		}
		return Result{Status: Fail, Summary: fmt.Sprintf("%s (%s): %s", uri, digest, reason), Fix: "make image"}
	}
	var m imageManifest
	if err := json.Unmarshal([]byte(aws.ToString(got.Images[0].ImageManifest)), &m); err != nil {
		return Result{Status: Fail, Summary: fmt.Sprintf("%s (%s): unreadable manifest: %v", uri, digest, err)}
	}
	mediaType := aws.ToString(got.Images[0].ImageManifestMediaType)
	if mediaType == "" {
		mediaType = m.MediaType
	}

	var platforms []string
	has := false
	if len(m.Manifests) > 0 || mediaType == mediaOCIIndex || mediaType == mediaDockerList {
		seen := map[string]bool{}
		for _, e := range m.Manifests {
			if e.Platform == nil || e.Platform.OS == "unknown" { // build attestations
				continue
			}
			p := e.Platform.OS + "/" + e.Platform.Architecture
			has = has || p == platform
			if e.Platform.Variant != "" {
				p += "/" + e.Platform.Variant
			}
			if !seen[p] {
				seen[p] = true
				platforms = append(platforms, p)
			}
		}
	} else {
		p, err := c.configPlatform(ctx, cl, ref, m)
		if err != nil {
			return Result{Status: Warn,
				Summary: fmt.Sprintf("%s is %s; its platform could not be read: %s", uri, digest, oneLine(err.Error())),
				Fix:     "make image (builds an index for linux/arm64)"}
		}
		platforms, has = []string{p}, p == platform
	}
	sort.Strings(platforms)
	kind := "an image index"
	if len(m.Manifests) == 0 {
		kind = "a single-platform image"
	}
	summary := fmt.Sprintf("%s is %s, %s for %s", imageName(ref), digest, kind, strings.Join(platforms, ", "))
	if arch == "" {
		return Result{Status: Warn, Summary: summary,
			Details: []string{"the template names no task definition running SandboxImage, so its architecture was not compared"}}
	}
	if !has {
		return Result{Status: Fail,
			Summary: fmt.Sprintf("%s has no %s image, which the sandbox task definition (CpuArchitecture %s) runs", summary, platform, c.Stack.CPUArchitecture),
			Fix:     "rebuild and push for " + platform + ": make image (docker buildx build --platform " + platform + ")"}
	}
	res := Result{Status: OK, Summary: summary, Details: notes}
	if ref.Digest != "" {
		res.Details = append(res.Details, "pinned by digest")
		return res
	}
	repo, err := cl.DescribeRepositories(ctx, &ecr.DescribeRepositoriesInput{
		RegistryId: aws.String(ref.Account), RepositoryNames: []string{ref.Repository}})
	immutable := err == nil && len(repo.Repositories) == 1 && repo.Repositories[0].ImageTagMutability == ecrtypes.ImageTagMutabilityImmutable
	switch {
	case immutable:
		res.Details = append(res.Details, "the repository's tags are IMMUTABLE, so the tag cannot move (by digest: SandboxImage="+ref.Pinned(digest)+")")
	case err != nil:
		res.Status = Warn
		res.Details = append(res.Details, "tag mutability unknown ("+oneLine(apiMessage(err))+"): every RunTask resolves the tag anew, so a moved tag changes what new sandboxes run")
		res.Fix = "pin by digest: SandboxImage=" + ref.Pinned(digest)
	default:
		res.Status = Warn
		res.Details = append(res.Details, "the repository's tags can move: every RunTask resolves the tag anew, so a pushed tag changes what new sandboxes run")
		res.Fix = "pin by digest: SandboxImage=" + ref.Pinned(digest)
	}
	return res
}

// imageName is repository:tag or repository@digest.
func imageName(r ImageRef) string {
	if r.Digest != "" {
		return r.Repository + "@" + r.Digest
	}
	return r.Repository + ":" + r.Tag
}

// imageSelector is "tagged <tag>" or the digest.
func imageSelector(r ImageRef) string {
	if r.Digest != "" {
		return r.Digest
	}
	return "tagged " + r.Tag
}

// configPlatform reads a single-platform image's os/architecture from its
// configuration blob, through the address ecr:GetDownloadUrlForLayer hands out.
func (c *Checker) configPlatform(ctx context.Context, cl ECRAPI, ref ImageRef, m imageManifest) (string, error) {
	if m.Config == nil || m.Config.Digest == "" {
		return "", errors.New("the manifest names no configuration")
	}
	u, err := cl.GetDownloadUrlForLayer(ctx, &ecr.GetDownloadUrlForLayerInput{
		RegistryId: aws.String(ref.Account), RepositoryName: aws.String(ref.Repository), LayerDigest: aws.String(m.Config.Digest)})
	if err != nil {
		r := failed(CheckSandboxImage, "ecr:GetDownloadUrlForLayer", err)
		return "", errors.New(r.Summary)
	}
	ctx, cancel := context.WithTimeout(ctx, configFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, aws.ToString(u.DownloadUrl), nil)
	if err != nil {
		return "", fmt.Errorf("configuration address: %w", err)
	}
	var hc aws.HTTPClient = http.DefaultClient
	if c.HTTP != nil {
		hc = c.HTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch the configuration: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch the configuration: %s", resp.Status)
	}
	var cfg struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxConfigBytes)).Decode(&cfg); err != nil {
		return "", fmt.Errorf("the configuration is not JSON: %w", err)
	}
	return cfg.OS + "/" + cfg.Architecture, nil
}
