package state

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// Attributes of connection records.
const (
	aConnID      = "connectionId"
	aConnectedAt = "connectedAt"
	// aToldStarting is the generation whose `starting` the connection was last told;
	// aToldBy the call that told it (TellStarting).
	aToldStarting = "toldStarting"
	aToldBy       = "toldBy"
)

// Connection is one open WebSocket connection of a user.
type Connection struct {
	UserID       string
	ConnectionID string
	ConnectedAt  time.Time
	// ExpiresAt is when DynamoDB's TTL may delete the record if $disconnect never
	// removed it.
	ExpiresAt time.Time
}

// AddConnection records a connection, expiring ConnectionTTL from now. Recording the
// same connection again refreshes it and keeps what it was told.
func (s *Store) AddConnection(ctx context.Context, userID, connectionID string) (Connection, error) {
	if err := checkID("user id", userID); err != nil {
		return Connection{}, fmt.Errorf("add connection: %w", err)
	}
	if err := checkID("connection id", connectionID); err != nil {
		return Connection{}, fmt.Errorf("add connection: %w", err)
	}
	now := s.now()
	c := Connection{UserID: userID, ConnectionID: connectionID, ConnectedAt: now, ExpiresAt: time.Unix(ttl(now.Add(s.ConnectionTTL)), 0)}
	// An update, not a put: recording again (the connect notice's refresh) keeps what
	// the connection was told (TellStarting).
	e := newExpr()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key:       key(userKey(userID), connPrefix+connectionID),
		UpdateExpression: aws.String("SET " + strings.Join([]string{
			e.n(aUserID) + " = " + e.v("user", avS(userID)),
			e.n(aConnID) + " = " + e.v("conn", avS(connectionID)),
			e.n(aConnectedAt) + " = " + e.v("at", avMs(now)),
			e.n(AttrTTL) + " = " + e.v("ttl", avN(c.ExpiresAt.Unix())),
		}, ", ")),
		ExpressionAttributeNames:  e.Names(),
		ExpressionAttributeValues: e.Values(),
	})
	if err != nil {
		return Connection{}, fmt.Errorf("add connection %s of %s: %w", connectionID, userID, unavailable(err))
	}
	return c, nil
}

// RemoveConnection deletes a connection record; removing an absent one is not an error.
func (s *Store) RemoveConnection(ctx context.Context, userID, connectionID string) error {
	if err := checkID("user id", userID); err != nil {
		return fmt.Errorf("remove connection: %w", err)
	}
	if err := checkID("connection id", connectionID); err != nil {
		return fmt.Errorf("remove connection: %w", err)
	}
	_, err := s.api.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table), Key: key(userKey(userID), connPrefix+connectionID),
	})
	if err != nil {
		return fmt.Errorf("remove connection %s of %s: %w", connectionID, userID, unavailable(err))
	}
	return nil
}

// TellStarting reports whether the caller is the first to tell the connection that
// the sandbox of generation is starting, and records that it is. Two paths tell a
// connection of a start — the Connect function's notice to a new connection, and the
// Message function to the sender of the first frame queued — and a client whose first
// frame races its connect notice would otherwise hear `starting` twice. One
// conditional write on the connection's record decides: false for a generation told
// already (or a later one). A connection with no record (a broadcast that met its
// handshake's 410 removed it; the notice's post records it again) is told, and nothing
// is written: better twice than never.
func (s *Store) TellStarting(ctx context.Context, userID, connectionID string, generation int64) (bool, error) {
	if err := checkID("user id", userID); err != nil {
		return false, fmt.Errorf("tell starting: %w", err)
	}
	if err := checkID("connection id", connectionID); err != nil {
		return false, fmt.Errorf("tell starting: %w", err)
	}
	teller := newToken()
	e := newExpr()
	_, err := s.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName: aws.String(s.table),
		Key:       key(userKey(userID), connPrefix+connectionID),
		UpdateExpression: aws.String("SET " + e.n(aToldStarting) + " = " + e.v("gen", avN(generation)) + ", " +
			e.n(aToldBy) + " = " + e.v("teller", avS(teller))),
		ConditionExpression: aws.String("attribute_exists(" + e.n(AttrPK) + ") AND (attribute_not_exists(" + e.n(aToldStarting) + ") OR " +
			e.n(aToldStarting) + " < " + e.v("gen", avN(generation)) + ")"),
		ExpressionAttributeNames:            e.Names(),
		ExpressionAttributeValues:           e.Values(),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if r, refused := refusalOf(err); refused {
		old := r.old(soleItem)
		// No record: tell. Our own write, committed by an attempt whose reply was lost
		// and refused when the SDK sent it again: tell.
		return len(old) == 0 || getS(old, aToldBy) == teller, nil
	}
	if err != nil {
		return false, fmt.Errorf("tell %s of %s starting: %w", connectionID, userID, unavailable(err))
	}
	return true, nil
}

// Connections lists the user's unexpired connections with one Query call per page of
// 1 MB (a single call for any realistic number of connections). Records past their
// TTL that DynamoDB has not deleted yet are left out.
func (s *Store) Connections(ctx context.Context, userID string) ([]Connection, error) {
	if err := checkID("user id", userID); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	now := s.now()
	var conns []Connection
	err := s.query(ctx, userID, connPrefix, func(item map[string]types.AttributeValue) {
		exp := time.Unix(getN(item, AttrTTL), 0)
		if !now.Before(exp) {
			return
		}
		conns = append(conns, Connection{
			UserID: userID, ConnectionID: getS(item, aConnID),
			ConnectedAt: getMs(item, aConnectedAt), ExpiresAt: exp,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list connections of %s: %w", userID, err)
	}
	return conns, nil
}

// query calls fn with each of the user's items whose sort key starts with prefix, in
// sort-key order, with strongly consistent reads.
func (s *Store) query(ctx context.Context, userID, prefix string, fn func(map[string]types.AttributeValue)) error {
	e := newExpr()
	in := &dynamodb.QueryInput{
		TableName: aws.String(s.table),
		KeyConditionExpression: aws.String(strings.Join([]string{
			e.n(AttrPK) + " = " + e.v("pk", avS(userKey(userID))),
			"begins_with(" + e.n(AttrSK) + ", " + e.v("prefix", avS(prefix)) + ")",
		}, " AND ")),
		ConsistentRead: aws.Bool(true),
	}
	in.ExpressionAttributeNames, in.ExpressionAttributeValues = e.Names(), e.Values()
	for {
		out, err := s.api.Query(ctx, in)
		if err != nil {
			return unavailable(err)
		}
		for _, item := range out.Items {
			fn(item)
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

// Connection returns one of the user's connection records with one strongly
// consistent GetItem: ErrNotFound when there is none, or it has expired. Finding it
// proves the connection is the user's: connection ids are never reused.
func (s *Store) Connection(ctx context.Context, userID, connectionID string) (Connection, error) {
	if err := checkID("user id", userID); err != nil {
		return Connection{}, fmt.Errorf("get connection: %w", err)
	}
	if err := checkID("connection id", connectionID); err != nil {
		return Connection{}, fmt.Errorf("get connection: %w", err)
	}
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(s.table), Key: key(userKey(userID), connPrefix+connectionID), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return Connection{}, fmt.Errorf("get connection %s of %s: %w", connectionID, userID, unavailable(err))
	}
	exp := time.Unix(getN(out.Item, AttrTTL), 0)
	if len(out.Item) == 0 || !s.now().Before(exp) {
		return Connection{}, fmt.Errorf("get connection %s of %s: %w", connectionID, userID, ErrNotFound)
	}
	return Connection{UserID: userID, ConnectionID: connectionID, ConnectedAt: getMs(out.Item, aConnectedAt), ExpiresAt: exp}, nil
}
