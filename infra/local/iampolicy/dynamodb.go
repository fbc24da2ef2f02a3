package iampolicy

import (
	"encoding/json"
	"sort"
	"strings"

	"github.com/sandgate/sandgate/infra/local/identity"
)

// DynamoDB condition keys.
const (
	keyLeadingKeys        = "dynamodb:LeadingKeys"
	keyAttributes         = "dynamodb:Attributes"
	keySelect             = "dynamodb:Select"
	keyReturnValues       = "dynamodb:ReturnValues"
	keyReturnConsumed     = "dynamodb:ReturnConsumedCapacity"
	keyEnclosingOperation = "dynamodb:EnclosingOperation"
)

// DynamoDBTargetPrefix starts every DynamoDB X-Amz-Target header (JSON 1.0).
const DynamoDBTargetPrefix = "DynamoDB_20120810."

// DynamoDBTable is what the derivation needs to know of a table: the name of its
// partition key, and of each index's.
type DynamoDBTable struct {
	HashKey       string
	IndexHashKeys map[string]string
}

// DynamoDBSchema looks up a table by name; false for a table that does not exist.
type DynamoDBSchema func(table string) (DynamoDBTable, bool)

// DynamoDB derives what a DynamoDB call asks (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html):
// the action on the table (or index) ARN, with dynamodb:LeadingKeys (the partition
// key values the call names, from Key, Item, or KeyConditionExpression's equality),
// dynamodb:Attributes (projections, a put item's names, an update's key and targets),
// dynamodb:Select, dynamodb:ReturnValues and dynamodb:ReturnConsumedCapacity when the
// call sets them. TransactWriteItems is authorised item by item as PutItem,
// UpdateItem, DeleteItem or ConditionCheckItem, TransactGetItems as GetItem each;
// BatchWriteItem and BatchGetItem once per table with all the table's leading keys.
// Scan and PartiQL statements carry no dynamodb:LeadingKeys, as on AWS, so a
// ForAllValues condition on it lets them through. Calls with keys need the table in
// schema; a table (or index) it does not know is ErrMalformed.
func DynamoDB(env Env, c Call, schema DynamoDBSchema) ([]identity.Request, error) {
	target := c.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, DynamoDBTargetPrefix)
	if !ok {
		return nil, malformed("X-Amz-Target %q is not DynamoDB's", target)
	}
	var in ddbInput
	if len(c.Body) > 0 {
		if err := json.Unmarshal(c.Body, &in); err != nil {
			return nil, malformed("%s: body is not JSON: %v", op, err)
		}
	}
	d := ddb{env: env, tls: c.TLS, schema: schema}
	switch op {
	case "GetItem", "PutItem", "UpdateItem", "DeleteItem":
		r, err := d.item(op, &in.ddbItemInput, "")
		if err != nil {
			return nil, err
		}
		return []identity.Request{r}, nil
	case "Query":
		return d.query(&in)
	case "Scan":
		arn, err := d.tableOrIndex(in.TableName, in.IndexName)
		if err != nil {
			return nil, err
		}
		ctx := map[string][]string{}
		d.projection(ctx, &in.ddbItemInput)
		in.options(ctx)
		return []identity.Request{d.env.request(d.tls, "dynamodb:Scan", arn, ctx)}, nil
	case "BatchGetItem":
		return d.batchGet(in.RequestItems)
	case "BatchWriteItem":
		return d.batchWrite(in.RequestItems)
	case "TransactGetItems":
		var out []identity.Request
		for i, t := range in.TransactItems {
			if t.Get == nil {
				return nil, malformed("TransactGetItems item %d has no Get", i)
			}
			r, err := d.item("GetItem", t.Get, "TransactGetItems")
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	case "TransactWriteItems":
		var out []identity.Request
		for i, t := range in.TransactItems {
			var (
				r   identity.Request
				err error
			)
			switch {
			case t.Put != nil:
				r, err = d.item("PutItem", t.Put, "TransactWriteItems")
			case t.Update != nil:
				r, err = d.item("UpdateItem", t.Update, "TransactWriteItems")
			case t.Delete != nil:
				r, err = d.item("DeleteItem", t.Delete, "TransactWriteItems")
			case t.ConditionCheck != nil:
				r, err = d.item("ConditionCheckItem", t.ConditionCheck, "")
			default:
				err = malformed("TransactWriteItems item %d has no Put, Update, Delete or ConditionCheck", i)
			}
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	case "ExecuteStatement":
		r, err := d.partiql(in.Statement)
		if err != nil {
			return nil, err
		}
		return []identity.Request{r}, nil
	case "BatchExecuteStatement", "ExecuteTransaction":
		list := in.Statements
		if op == "ExecuteTransaction" {
			list = in.TransactStatements
		}
		var out []identity.Request
		for _, s := range list {
			r, err := d.partiql(s.Statement)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	case "CreateTable", "DeleteTable", "DescribeTable", "UpdateTable", "UpdateTimeToLive",
		"DescribeTimeToLive", "DescribeContinuousBackups", "UpdateContinuousBackups", "ListTagsOfResource":
		name := in.TableName
		if name == "" {
			name = in.ResourceArn
		}
		arn, err := d.table(name)
		if err != nil {
			return nil, err
		}
		return []identity.Request{d.env.request(d.tls, "dynamodb:"+op, arn, nil)}, nil
	case "ListTables", "DescribeLimits", "DescribeEndpoints":
		return []identity.Request{d.env.request(d.tls, "dynamodb:"+op, "*", nil)}, nil
	}
	return nil, unsupported("dynamodb:"+op, "*", "the local stack does not derive DynamoDB %s", op)
}

// ddbValue is one AttributeValue: {"S": "…"}, {"N": "…"}, {"B": "…"}, ….
type ddbValue map[string]json.RawMessage

type ddbItemInput struct {
	TableName                 string
	IndexName                 string
	Key                       map[string]ddbValue
	Item                      map[string]ddbValue
	ProjectionExpression      string
	AttributesToGet           []string
	ExpressionAttributeNames  map[string]string
	ExpressionAttributeValues map[string]ddbValue
	UpdateExpression          string
	AttributeUpdates          map[string]json.RawMessage
	ReturnValues              string
	ReturnConsumedCapacity    string
	Select                    string
}

func (in *ddbItemInput) options(ctx map[string][]string) {
	if in.ReturnValues != "" {
		ctx[keyReturnValues] = []string{in.ReturnValues}
	}
	if in.ReturnConsumedCapacity != "" {
		ctx[keyReturnConsumed] = []string{in.ReturnConsumedCapacity}
	}
	if in.Select != "" {
		ctx[keySelect] = []string{in.Select}
	}
}

type ddbInput struct {
	ddbItemInput
	KeyConditionExpression string
	KeyConditions          map[string]struct {
		ComparisonOperator string
		AttributeValueList []ddbValue
	}
	RequestItems  map[string]json.RawMessage
	TransactItems []struct {
		Get, Put, Update, Delete, ConditionCheck *ddbItemInput
	}
	Statement          string
	Statements         []struct{ Statement string }
	TransactStatements []struct{ Statement string }
	ResourceArn        string
}

type ddb struct {
	env    Env
	tls    bool
	schema DynamoDBSchema
}

// table returns a table's ARN; name may be the table's ARN already.
func (d ddb) table(name string) (string, error) {
	if name == "" {
		return "", malformed("no TableName")
	}
	if strings.HasPrefix(name, "arn:") {
		return name, nil
	}
	return d.env.arn("dynamodb", d.env.Region, d.env.Account, "table/"+name), nil
}

func (d ddb) tableOrIndex(name, index string) (string, error) {
	arn, err := d.table(name)
	if err != nil || index == "" {
		return arn, err
	}
	return arn + "/index/" + index, nil
}

// tableName is the bare name of a TableName that may be an ARN.
func tableName(name string) string {
	if strings.HasPrefix(name, "arn:") {
		if i := strings.Index(name, ":table/"); i >= 0 {
			name = name[i+len(":table/"):]
			if j := strings.IndexByte(name, '/'); j >= 0 {
				name = name[:j]
			}
		}
	}
	return name
}

// hashKey returns the partition key's name of a table, or of one of its indexes.
func (d ddb) hashKey(name, index string) (string, error) {
	if d.schema == nil {
		return "", malformed("no table schema to find %s's partition key", name)
	}
	t, ok := d.schema(tableName(name))
	if !ok {
		return "", malformed("table %s is unknown", name)
	}
	if index == "" {
		return t.HashKey, nil
	}
	k, ok := t.IndexHashKeys[index]
	if !ok {
		return "", malformed("index %s of table %s is unknown", index, name)
	}
	return k, nil
}

// item derives one single-item operation (also a transaction's item).
func (d ddb) item(op string, in *ddbItemInput, enclosing string) (identity.Request, error) {
	arn, err := d.table(in.TableName)
	if err != nil {
		return identity.Request{}, err
	}
	hk, err := d.hashKey(in.TableName, "")
	if err != nil {
		return identity.Request{}, err
	}
	key := in.Key
	if op == "PutItem" {
		key = in.Item
	}
	v, ok := key[hk]
	if !ok {
		return identity.Request{}, malformed("%s on %s names no %s", op, in.TableName, hk)
	}
	lead, err := v.str()
	if err != nil {
		return identity.Request{}, err
	}
	ctx := map[string][]string{keyLeadingKeys: {lead}}
	switch op {
	case "GetItem":
		d.projection(ctx, in)
	case "PutItem":
		ctx[keyAttributes] = sortedKeys(in.Item)
	case "UpdateItem":
		names := sortedKeys(in.Key)
		if in.UpdateExpression != "" {
			names = append(names, updateTargets(in.UpdateExpression, in.ExpressionAttributeNames)...)
		}
		for k := range in.AttributeUpdates {
			names = append(names, k)
		}
		ctx[keyAttributes] = dedupe(names)
	}
	if op != "ConditionCheckItem" {
		in.options(ctx)
	} else if in.ReturnConsumedCapacity != "" {
		ctx[keyReturnConsumed] = []string{in.ReturnConsumedCapacity}
	}
	if enclosing != "" {
		ctx[keyEnclosingOperation] = []string{enclosing}
	}
	return d.env.request(d.tls, "dynamodb:"+op, arn, ctx), nil
}

// projection sets dynamodb:Attributes from a read's projection, when it has one.
func (d ddb) projection(ctx map[string][]string, in *ddbItemInput) {
	var names []string
	if in.ProjectionExpression != "" {
		for _, p := range splitTop(tokens(in.ProjectionExpression), ",") {
			if len(p) > 0 {
				names = append(names, topName(p[0], in.ExpressionAttributeNames))
			}
		}
	}
	names = append(names, in.AttributesToGet...)
	if len(names) > 0 {
		ctx[keyAttributes] = dedupe(names)
	}
}

func (d ddb) query(in *ddbInput) ([]identity.Request, error) {
	arn, err := d.tableOrIndex(in.TableName, in.IndexName)
	if err != nil {
		return nil, err
	}
	hk, err := d.hashKey(in.TableName, in.IndexName)
	if err != nil {
		return nil, err
	}
	var lead string
	switch {
	case in.KeyConditionExpression != "":
		ph, ok := partitionEquality(in.KeyConditionExpression, hk, in.ExpressionAttributeNames)
		if !ok {
			return nil, malformed("Query's KeyConditionExpression has no equality on %s", hk)
		}
		v, ok := in.ExpressionAttributeValues[ph]
		if !ok {
			return nil, malformed("Query's KeyConditionExpression names %s, which has no value", ph)
		}
		if lead, err = v.str(); err != nil {
			return nil, err
		}
	case in.KeyConditions != nil:
		kc, ok := in.KeyConditions[hk]
		if !ok || kc.ComparisonOperator != "EQ" || len(kc.AttributeValueList) != 1 {
			return nil, malformed("Query's KeyConditions has no EQ on %s", hk)
		}
		if lead, err = kc.AttributeValueList[0].str(); err != nil {
			return nil, err
		}
	default:
		return nil, malformed("Query without a key condition")
	}
	ctx := map[string][]string{keyLeadingKeys: {lead}}
	d.projection(ctx, &in.ddbItemInput)
	in.options(ctx)
	return []identity.Request{d.env.request(d.tls, "dynamodb:Query", arn, ctx)}, nil
}

func (d ddb) batchGet(items map[string]json.RawMessage) ([]identity.Request, error) {
	var out []identity.Request
	for _, name := range sortedKeys(items) {
		var t struct {
			Keys                     []map[string]ddbValue
			ProjectionExpression     string
			AttributesToGet          []string
			ExpressionAttributeNames map[string]string
		}
		if err := json.Unmarshal(items[name], &t); err != nil {
			return nil, malformed("BatchGetItem %s: %v", name, err)
		}
		leads, err := d.leads(name, t.Keys)
		if err != nil {
			return nil, err
		}
		arn, err := d.table(name)
		if err != nil {
			return nil, err
		}
		ctx := map[string][]string{keyLeadingKeys: leads}
		d.projection(ctx, &ddbItemInput{ProjectionExpression: t.ProjectionExpression,
			AttributesToGet: t.AttributesToGet, ExpressionAttributeNames: t.ExpressionAttributeNames})
		out = append(out, d.env.request(d.tls, "dynamodb:BatchGetItem", arn, ctx))
	}
	return out, nil
}

func (d ddb) batchWrite(items map[string]json.RawMessage) ([]identity.Request, error) {
	var out []identity.Request
	for _, name := range sortedKeys(items) {
		var list []struct {
			PutRequest    *struct{ Item map[string]ddbValue }
			DeleteRequest *struct{ Key map[string]ddbValue }
		}
		if err := json.Unmarshal(items[name], &list); err != nil {
			return nil, malformed("BatchWriteItem %s: %v", name, err)
		}
		var keys []map[string]ddbValue
		for i, w := range list {
			switch {
			case w.PutRequest != nil:
				keys = append(keys, w.PutRequest.Item)
			case w.DeleteRequest != nil:
				keys = append(keys, w.DeleteRequest.Key)
			default:
				return nil, malformed("BatchWriteItem %s item %d is neither put nor delete", name, i)
			}
		}
		leads, err := d.leads(name, keys)
		if err != nil {
			return nil, err
		}
		arn, err := d.table(name)
		if err != nil {
			return nil, err
		}
		out = append(out, d.env.request(d.tls, "dynamodb:BatchWriteItem", arn, map[string][]string{keyLeadingKeys: leads}))
	}
	return out, nil
}

// leads returns the partition key values of keys (items), each once.
func (d ddb) leads(table string, keys []map[string]ddbValue) ([]string, error) {
	hk, err := d.hashKey(table, "")
	if err != nil {
		return nil, err
	}
	var out []string
	for i, k := range keys {
		v, ok := k[hk]
		if !ok {
			return nil, malformed("%s item %d names no %s", table, i, hk)
		}
		s, err := v.str()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return dedupe(out), nil
}

// partiql derives one PartiQL statement: dynamodb:PartiQL<Verb> on its table or
// index, with no dynamodb:LeadingKeys (AWS supplies none for PartiQL).
func (d ddb) partiql(stmt string) (identity.Request, error) {
	toks := partiqlTokens(stmt)
	if len(toks) == 0 {
		return identity.Request{}, malformed("empty PartiQL statement")
	}
	var action string
	var at int // index of the token naming the table
	switch strings.ToUpper(toks[0]) {
	case "SELECT":
		action, at = "dynamodb:PartiQLSelect", indexAfter(toks, "FROM")
	case "INSERT":
		action, at = "dynamodb:PartiQLInsert", indexAfter(toks, "INTO")
	case "UPDATE":
		action, at = "dynamodb:PartiQLUpdate", 1
	case "DELETE":
		action, at = "dynamodb:PartiQLDelete", indexAfter(toks, "FROM")
	default:
		return identity.Request{}, malformed("PartiQL statement %q is not SELECT, INSERT, UPDATE or DELETE", toks[0])
	}
	if at <= 0 || at >= len(toks) {
		return identity.Request{}, malformed("PartiQL statement names no table: %q", stmt)
	}
	table, index := unquote(toks[at]), ""
	if at+2 < len(toks) && toks[at+1] == "." {
		index = unquote(toks[at+2])
	}
	arn, err := d.tableOrIndex(table, index)
	if err != nil {
		return identity.Request{}, err
	}
	return d.env.request(d.tls, action, arn, nil), nil
}

func indexAfter(toks []string, kw string) int {
	for i, t := range toks {
		if strings.EqualFold(t, kw) {
			return i + 1
		}
	}
	return -1
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return s
}

// partiqlTokens splits a PartiQL statement into words, "quoted identifiers",
// 'strings' and single punctuation characters.
func partiqlTokens(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(s) {
				if s[j] == c {
					if j+1 < len(s) && s[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			if j >= len(s) {
				j = len(s) - 1
			}
			out = append(out, s[i:j+1])
			i = j + 1
		case strings.IndexByte(".,()[]{}=<>!?*+-/;:", c) >= 0:
			out = append(out, string(c))
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\n\r\"'.,()[]{}=<>!?*+-/;:", rune(s[j])) {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// str returns an AttributeValue as the string IAM compares: S and N as written, B in
// its base64 form.
func (v ddbValue) str() (string, error) {
	for _, t := range []string{"S", "N", "B"} {
		if raw, ok := v[t]; ok {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", malformed("key value %s: %v", t, err)
			}
			return s, nil
		}
	}
	return "", malformed("a key value must be S, N or B")
}

// tokens splits a DynamoDB expression into paths, :values, words and punctuation.
func tokens(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case (c == '<' || c == '>') && i+1 < len(s) && (s[i+1] == '=' || (c == '<' && s[i+1] == '>')):
			out = append(out, s[i:i+2])
			i += 2
		case strings.IndexByte("(),=<>+-", c) >= 0:
			out = append(out, string(c))
			i++
		default:
			j := i
			for j < len(s) && strings.IndexByte(" \t\n\r(),=<>+-", s[j]) < 0 {
				j++
			}
			out = append(out, s[i:j])
			i = j
		}
	}
	return out
}

// splitTop splits tokens at sep outside parentheses.
func splitTop(toks []string, sep string) [][]string {
	var out [][]string
	var cur []string
	depth := 0
	for _, t := range toks {
		switch t {
		case "(":
			depth++
		case ")":
			depth--
		}
		if t == sep && depth == 0 {
			out = append(out, cur)
			cur = nil
			continue
		}
		cur = append(cur, t)
	}
	return append(out, cur)
}

// topName is the top-level attribute a path names (#n resolved through names).
func topName(path string, names map[string]string) string {
	if i := strings.IndexAny(path, ".["); i >= 0 {
		path = path[:i]
	}
	if strings.HasPrefix(path, "#") {
		if n, ok := names[path]; ok {
			return n
		}
	}
	return path
}

// partitionEquality finds "<hash key> = :v" (either way round) in a key condition
// and returns :v.
func partitionEquality(expr, hashKey string, names map[string]string) (string, bool) {
	var toks []string
	for _, t := range tokens(expr) {
		if t != "(" && t != ")" {
			toks = append(toks, t)
		}
	}
	for i := 1; i+1 < len(toks); i++ {
		if toks[i] != "=" {
			continue
		}
		l, r := toks[i-1], toks[i+1]
		if strings.HasPrefix(r, ":") && topName(l, names) == hashKey && !strings.ContainsAny(l, ".[") {
			return r, true
		}
		if strings.HasPrefix(l, ":") && topName(r, names) == hashKey && !strings.ContainsAny(r, ".[") {
			return l, true
		}
	}
	return "", false
}

// updateTargets lists the top-level attributes an UpdateExpression writes.
func updateTargets(expr string, names map[string]string) []string {
	var out []string
	var section string
	var cur []string
	flush := func() {
		for _, action := range splitTop(cur, ",") {
			if len(action) > 0 {
				out = append(out, topName(action[0], names))
			}
		}
		cur = nil
	}
	for _, t := range tokens(expr) {
		switch strings.ToUpper(t) {
		case "SET", "REMOVE", "ADD", "DELETE":
			flush()
			section = strings.ToUpper(t)
			continue
		}
		if section != "" {
			cur = append(cur, t)
		}
	}
	flush()
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	out := in[:0:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
