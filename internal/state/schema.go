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
)

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
// and template.yaml declares: pk/sk strings, on-demand billing.
func CreateTableInput(name string) *dynamodb.CreateTableInput {
	return &dynamodb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(AttrPK), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String(AttrSK), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(AttrSK), KeyType: types.KeyTypeRange},
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
