package state

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// The table's schema: one table, a string partition key and sort key, and a TTL
// attribute. template.yaml's Table resource must match (a test in this package reads
// it); everything else about the items is this package's business.
const (
	// AttrPK is the partition key: USER#<userId>, ACCESS#<userId> (the user's limits,
	// access.go), or CAPACITY.
	AttrPK = "pk"
	// AttrSK is the sort key: SANDBOX, CONN#<connectionId>, INBOX#<seq>, INBOXMETA,
	// or SANDBOXES under CAPACITY.
	AttrSK = "sk"
	// AttrTTL holds the expiry, in Unix seconds, of every transient item
	// (connections, inbox items and the inbox counter). Sandbox records and the
	// capacity counter have none: they are state, not cache.
	AttrTTL = "expiresAt"
	// AttrSandboxOf is the key of the Sandboxes index: the user id, carried by sandbox
	// records alone (takeWrite, the one write that creates one, sets it; a sandbox's
	// own session may not name it, HolderAttributes), so the index is sparse.
	AttrSandboxOf = "sandboxOf"
	// SandboxIndex is the global secondary index of the sandbox records: what cleanup
	// reads instead of the whole table (ListSandboxesIndexed).
	SandboxIndex = "Sandboxes"
)

// SandboxIndexProjection is what the Sandboxes index carries besides the keys: the
// attributes that change only when a record changes state (an acquisition, a stop, a
// slot given back, a purge), never the ones a heartbeat renews (leaseDeadline,
// heartbeatAt, lastActivity, version), so that a renewal writes the table alone. What
// cleanup needs of a lease's deadline it reads from the table (ListSandboxesIndexed).
var SandboxIndexProjection = []string{aState, aToken, aGen, aTask, aSince, aSlot, aPurgeStarted}

// Item keys.
const (
	userPrefix  = "USER#"
	skSandbox   = "SANDBOX"
	connPrefix  = "CONN#"
	inboxPrefix = "INBOX#"
	// skInboxMeta sorts apart from INBOX#… so the inbox Query never returns it.
	skInboxMeta = "INBOXMETA"
	pkCapacity  = "CAPACITY"
	skCapacity  = "SANDBOXES"
)

// CreateTableInput returns the table definition that tests and the local stack create
// and template.yaml declares: pk/sk strings, on-demand billing, and the sparse
// Sandboxes index (sandboxIndex).
func CreateTableInput(name string) *dynamodb.CreateTableInput {
	return &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(AttrPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(AttrSK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(AttrSandboxOf), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrSK), KeyType: types.KeyTypeRange},
		},
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{sandboxIndex()},
	}
}

// sandboxIndex is the Sandboxes index: hashed on the user id, so its items spread
// over partitions as the table's do (cleanup scans it whole, it is never queried by
// key), projecting SandboxIndexProjection.
func sandboxIndex() types.GlobalSecondaryIndex {
	return types.GlobalSecondaryIndex{
		IndexName: aws.String(SandboxIndex),
		KeySchema: []types.KeySchemaElement{{AttributeName: aws.String(AttrSandboxOf), KeyType: types.KeyTypeHash}},
		Projection: &types.Projection{
			ProjectionType:   types.ProjectionTypeInclude,
			NonKeyAttributes: append([]string(nil), SandboxIndexProjection...),
		},
	}
}

// TimeToLiveInput returns the TTL setting of the table (CreateTable cannot carry it).
func TimeToLiveInput(name string) *dynamodb.UpdateTimeToLiveInput {
	return &dynamodb.UpdateTimeToLiveInput{
		TableName: aws.String(name),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{
			AttributeName: aws.String(AttrTTL),
			Enabled:       aws.Bool(true),
		},
	}
}

// SetupAPI is what CreateTable calls.
type SetupAPI interface {
	CreateTable(context.Context, *dynamodb.CreateTableInput, ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	UpdateTimeToLive(context.Context, *dynamodb.UpdateTimeToLiveInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
	UpdateTable(context.Context, *dynamodb.UpdateTableInput, ...func(*dynamodb.Options)) (*dynamodb.UpdateTableOutput, error)
}

// DefaultTableWait bounds CreateTable's wait for the table to become active.
const DefaultTableWait = 2 * time.Minute

// CreateTable creates the table, waits until it is active and enables TTL: what the
// local stack and tests do where CloudFormation is not.
func CreateTable(ctx context.Context, api SetupAPI, name string) error {
	if _, err := api.CreateTable(ctx, CreateTableInput(name)); err != nil {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	if err := dynamodb.NewTableExistsWaiter(api).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, DefaultTableWait); err != nil {
		return fmt.Errorf("wait for table %s: %w", name, err)
	}
	if _, err := api.UpdateTimeToLive(ctx, TimeToLiveInput(name)); err != nil {
		return fmt.Errorf("enable ttl on %s: %w", name, err)
	}
	return nil
}

// EnsureSandboxIndex adds the Sandboxes index to a table created before it existed
// (the local stack's persisted table; on AWS, CloudFormation does it from
// template.yaml) and waits until it is ACTIVE: DynamoDB then fills it from the items
// that carry AttrSandboxOf. Records written before AttrSandboxOf existed carry none
// until BackfillSandboxIndex gives it to them. A table that has the index is left
// alone.
func EnsureSandboxIndex(ctx context.Context, api SetupAPI, name string) error {
	desc, err := api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
	if err != nil {
		return fmt.Errorf("describe table %s: %w", name, err)
	}
	if indexStatus(desc.Table, SandboxIndex) == "" {
		ix := sandboxIndex()
		_, err := api.UpdateTable(ctx, &dynamodb.UpdateTableInput{
			TableName: aws.String(name),
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(AttrSandboxOf), AttributeType: types.ScalarAttributeTypeS},
			},
			GlobalSecondaryIndexUpdates: []types.GlobalSecondaryIndexUpdate{{Create: &types.CreateGlobalSecondaryIndexAction{
				IndexName: ix.IndexName, KeySchema: ix.KeySchema, Projection: ix.Projection,
			}}},
		})
		if err != nil {
			return fmt.Errorf("add index %s to %s: %w", SandboxIndex, name, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultTableWait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		desc, err := api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		if err != nil {
			return fmt.Errorf("wait for index %s of %s: %w", SandboxIndex, name, err)
		}
		if indexStatus(desc.Table, SandboxIndex) == types.IndexStatusActive {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %s of %s: %w", SandboxIndex, name, ctx.Err())
		case <-tick.C:
		}
	}
}

// indexStatus is the status of the table's global secondary index name, "" when the
// table has none of that name.
func indexStatus(t *types.TableDescription, name string) types.IndexStatus {
	if t == nil {
		return ""
	}
	for _, ix := range t.GlobalSecondaryIndexes {
		if aws.ToString(ix.IndexName) == name {
			if ix.IndexStatus == "" {
				return types.IndexStatusActive // some emulators leave it out once built
			}
			return ix.IndexStatus
		}
	}
	return ""
}
