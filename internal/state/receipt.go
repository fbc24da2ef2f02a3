package state

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// aLastSync is the sandbox record's durability receipt (Sandbox.LastSync): a map of
// the fields below. It outlives the sandbox (a start, a stop and a takeover leave it),
// so the status API answers it for a stopped user too.
const (
	aLastSync = "lastSync"

	rTime       = "time" // Unix ms
	rGeneration = "generation"
	rFiles      = "files"
	rBytes      = "bytes"
	rDigest     = "digest"
)

// SyncReceipt is what the last completed sync of a user's workspace stored: the
// marker it wrote (objsync.Marker), as the sandbox that wrote it recorded it.
type SyncReceipt struct {
	// Time is the marker's: when that sync began reading the workspace, so every
	// change before it is stored.
	Time       time.Time
	Generation int64
	Files      int
	Bytes      int64
	// Digest is the manifest digest of the stored files (see objsync).
	Digest string
}

func (r SyncReceipt) attr() types.AttributeValue {
	return &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
		rTime:       avMs(r.Time),
		rGeneration: avN(r.Generation),
		rFiles:      avN(int64(r.Files)),
		rBytes:      avN(r.Bytes),
		rDigest:     avS(r.Digest),
	}}
}

func decodeReceipt(item map[string]types.AttributeValue) *SyncReceipt {
	m, ok := item[aLastSync].(*types.AttributeValueMemberM)
	if !ok {
		return nil
	}
	return &SyncReceipt{
		Time:       getMs(m.Value, rTime),
		Generation: getN(m.Value, rGeneration),
		Files:      int(getN(m.Value, rFiles)),
		Bytes:      getN(m.Value, rBytes),
		Digest:     getS(m.Value, rDigest),
	}
}

// RecordSync records the receipt of a sync the holder of l completed, on the user's
// record, conditional on the lease (a counted state and l's token): a sandbox that
// lost its lease records nothing. The record then says what the store holds for the
// user until the next completed sync, whoever runs it. A sync whose marker landed but
// whose receipt did not (the task died between the two) leaves the previous receipt,
// which understates what is stored, never overstates it.
func (s *Store) RecordSync(ctx context.Context, l Lease, r SyncReceipt) error {
	if r.Generation <= 0 || r.Time.IsZero() {
		return fmt.Errorf("record sync: %w: receipt without a generation or time", ErrInvalid)
	}
	return s.fenced(ctx, "record sync", l, counted, func(e *expr) []string {
		return []string{e.n(aLastSync) + " = " + e.v("receipt", r.attr())}
	})
}
