package dynamodblocal

import (
	"context"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ChecksumMiddlewareID is the ID of the SDK's DynamoDB response CRC32 middleware,
// which ClientOptions replaces.
const ChecksumMiddlewareID = "DynamoDB:ResponseChecksumValidation"

const crc32Header = "X-Amz-Crc32"

// ClientOptions adapts a DynamoDB client to DynamoDB Local. Use it for clients of the
// emulator only (Server.Client applies it).
//
// Why: DynamoDB sends an X-Amz-Crc32 header (the CRC32 of the body) on every
// response, errors included, and the SDK's response checksum middleware assumes so: it
// wraps every response body and, when the header is missing, compares the body's CRC32
// with 0. DynamoDB Local 3.3.0 sends the header on 200 responses only, so each 4xx
// (ConditionalCheckFailed, TransactionCanceled: the normal outcome of a lost race
// here) made the SDK log "failed to close HTTP response body ... response did not match
// expected checksum, 0, <crc>". The bodies are intact; the header is absent.
//
// The fix keeps validation wherever the server states a checksum (every 200 from the
// emulator) and skips it where it states none, instead of turning validation or SDK
// logging off. Against DynamoDB itself this middleware would behave exactly like the
// SDK's, since the header is always present there; it is still installed only on
// emulator clients, so production clients run the SDK's code unchanged.
func ClientOptions(o *dynamodb.Options) {
	o.APIOptions = append(o.APIOptions, swapChecksumMiddleware)
}

func swapChecksumMiddleware(stack *middleware.Stack) error {
	if _, ok := stack.Deserialize.Get(ChecksumMiddlewareID); !ok {
		return nil // validation disabled on this client (DisableValidateResponseChecksum)
	}
	if _, err := stack.Deserialize.Swap(ChecksumMiddlewareID, headerChecksum{}); err != nil {
		return fmt.Errorf("replace dynamodb checksum middleware: %w", err)
	}
	return nil
}

// headerChecksum validates a response body's CRC32 when the response carries one.
type headerChecksum struct{}

func (headerChecksum) ID() string { return ChecksumMiddlewareID }

func (headerChecksum) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
	out, md, err := next.HandleDeserialize(ctx, in)
	if err != nil {
		return out, md, err
	}
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if !ok {
		return out, md, &smithy.DeserializationError{Err: fmt.Errorf("unknown response type %T", out.RawResponse)}
	}
	v := resp.Header.Get(crc32Header)
	if v == "" {
		return out, md, nil
	}
	want, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return out, md, &smithy.DeserializationError{Err: fmt.Errorf("parse %s header %q: %w", crc32Header, v, err)}
	}
	h := crc32.NewIEEE()
	resp.Body = &crc32Body{Reader: io.TeeReader(resp.Body, h), closer: resp.Body, hash: h, want: uint32(want)}
	return out, md, nil
}

// crc32Body checks the CRC32 of what was read when closed, as the SDK's does.
type crc32Body struct {
	io.Reader
	closer io.Closer
	hash   hash.Hash32
	want   uint32
}

func (b *crc32Body) Close() error {
	if got := b.hash.Sum32(); got != b.want {
		b.closer.Close()
		return fmt.Errorf("response did not match expected checksum, %d, %d", b.want, got)
	}
	return b.closer.Close()
}
