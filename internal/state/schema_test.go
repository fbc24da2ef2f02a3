package state_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"gopkg.in/yaml.v3"

	"github.com/sandgate/sandgate/internal/state"
)

// The table in template.yaml and the one tests and the local stack create must be the
// same table.
func TestCreateTableInput_MatchesTemplate(t *testing.T) {
	raw, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tmpl struct {
		Resources struct {
			Table struct {
				Type       string `yaml:"Type"`
				Properties struct {
					BillingMode          string `yaml:"BillingMode"`
					AttributeDefinitions []struct {
						AttributeName string `yaml:"AttributeName"`
						AttributeType string `yaml:"AttributeType"`
					} `yaml:"AttributeDefinitions"`
					KeySchema []struct {
						AttributeName string `yaml:"AttributeName"`
						KeyType       string `yaml:"KeyType"`
					} `yaml:"KeySchema"`
					TimeToLiveSpecification struct {
						AttributeName string `yaml:"AttributeName"`
						Enabled       bool   `yaml:"Enabled"`
					} `yaml:"TimeToLiveSpecification"`
					GlobalSecondaryIndexes []struct {
						IndexName string `yaml:"IndexName"`
						KeySchema []struct {
							AttributeName string `yaml:"AttributeName"`
							KeyType       string `yaml:"KeyType"`
						} `yaml:"KeySchema"`
						Projection struct {
							ProjectionType   string   `yaml:"ProjectionType"`
							NonKeyAttributes []string `yaml:"NonKeyAttributes"`
						} `yaml:"Projection"`
					} `yaml:"GlobalSecondaryIndexes"`
				} `yaml:"Properties"`
			} `yaml:"Table"`
		} `yaml:"Resources"`
	}
	if err := yaml.Unmarshal(raw, &tmpl); err != nil {
		t.Fatalf("parse template.yaml: %v", err)
	}
	got := tmpl.Resources.Table
	want := state.CreateTableInput("x")
	if got.Type != "AWS::DynamoDB::Table" || got.Properties.BillingMode != string(want.BillingMode) {
		t.Fatalf("template Table: type %q, billing %q; want AWS::DynamoDB::Table, %s", got.Type, got.Properties.BillingMode, want.BillingMode)
	}
	if len(got.Properties.AttributeDefinitions) != len(want.AttributeDefinitions) {
		t.Fatalf("template attribute definitions %+v, want %d", got.Properties.AttributeDefinitions, len(want.AttributeDefinitions))
	}
	for i, a := range want.AttributeDefinitions {
		g := got.Properties.AttributeDefinitions[i]
		if g.AttributeName != *a.AttributeName || g.AttributeType != string(a.AttributeType) {
			t.Errorf("attribute %d: template %+v, want %s %s", i, g, *a.AttributeName, a.AttributeType)
		}
	}
	if len(got.Properties.KeySchema) != len(want.KeySchema) {
		t.Fatalf("template key schema %+v", got.Properties.KeySchema)
	}
	for i, k := range want.KeySchema {
		g := got.Properties.KeySchema[i]
		if g.AttributeName != *k.AttributeName || g.KeyType != string(k.KeyType) {
			t.Errorf("key %d: template %+v, want %s %s", i, g, *k.AttributeName, k.KeyType)
		}
	}
	ttl := state.TimeToLiveInput("x").TimeToLiveSpecification
	if got.Properties.TimeToLiveSpecification.AttributeName != *ttl.AttributeName || !got.Properties.TimeToLiveSpecification.Enabled {
		t.Errorf("template TTL %+v, want %s enabled", got.Properties.TimeToLiveSpecification, *ttl.AttributeName)
	}
	if len(got.Properties.GlobalSecondaryIndexes) != len(want.GlobalSecondaryIndexes) {
		t.Fatalf("template has %d GSIs, CreateTableInput %d", len(got.Properties.GlobalSecondaryIndexes), len(want.GlobalSecondaryIndexes))
	}
	for i, w := range want.GlobalSecondaryIndexes {
		g := got.Properties.GlobalSecondaryIndexes[i]
		var keys []string
		for _, k := range g.KeySchema {
			keys = append(keys, k.AttributeName+" "+k.KeyType)
		}
		var wantKeys []string
		for _, k := range w.KeySchema {
			wantKeys = append(wantKeys, *k.AttributeName+" "+string(k.KeyType))
		}
		if g.IndexName != *w.IndexName || fmt.Sprint(keys) != fmt.Sprint(wantKeys) ||
			g.Projection.ProjectionType != string(w.Projection.ProjectionType) ||
			fmt.Sprint(g.Projection.NonKeyAttributes) != fmt.Sprint(w.Projection.NonKeyAttributes) {
			t.Errorf("template GSI %d: %+v; want %s %v %s %v", i, g, *w.IndexName, wantKeys, w.Projection.ProjectionType, w.Projection.NonKeyAttributes)
		}
	}
}

func TestCreateTable_EnablesTTL(t *testing.T) {
	e := newEnv(t)
	out, err := e.client.DescribeTimeToLive(context.Background(), &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatal(err)
	}
	d := out.TimeToLiveDescription
	if d == nil || aws.ToString(d.AttributeName) != state.AttrTTL || d.TimeToLiveStatus != types.TimeToLiveStatusEnabled {
		t.Fatalf("TTL = %+v, want %s enabled", d, state.AttrTTL)
	}
	table, err := e.client.DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatal(err)
	}
	if table.Table.TableStatus != types.TableStatusActive || len(table.Table.KeySchema) != 2 {
		t.Fatalf("table %+v", table.Table)
	}
}
