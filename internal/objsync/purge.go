package objsync

import (
	"context"
	"errors"
	"fmt"
)

// DeletePrefix deletes every object under prefix (files, marker and anything else),
// listing page by page and deleting in batches of at most MaxDeleteBatch, and returns
// how many keys it deleted. The caller holds the user's lock (PURGING), so no sandbox
// restores from a half-deleted prefix. Keys that fail are reported in a *PartialError
// after the rest of the prefix has been tried.
func DeletePrefix(ctx context.Context, b Bucket, prefix string) (int, error) {
	if b == nil {
		return 0, fmt.Errorf("%w: nil bucket", ErrConfig)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return 0, err
	}
	var (
		deleted  int
		failures []Failure
		token    string
	)
	for {
		page, err := b.List(ctx, prefix, token)
		if err != nil {
			return deleted, fmt.Errorf("delete prefix %s: list: %w", prefix, err)
		}
		keys := make([]string, 0, len(page.Objects))
		for _, o := range page.Objects {
			keys = append(keys, o.Key)
		}
		for len(keys) > 0 {
			batch := keys[:min(len(keys), MaxDeleteBatch)]
			keys = keys[len(batch):]
			err := b.Delete(ctx, batch)
			var pe *PartialError
			switch {
			case err == nil:
				deleted += len(batch)
			case errors.As(err, &pe):
				deleted += len(batch) - len(pe.Failures)
				failures = append(failures, pe.Failures...)
			default:
				return deleted, fmt.Errorf("delete prefix %s: %w", prefix, err)
			}
		}
		if page.Next == "" {
			break
		}
		token = page.Next
	}
	if len(failures) > 0 {
		return deleted, &PartialError{Op: "delete", Failures: failures}
	}
	return deleted, nil
}
