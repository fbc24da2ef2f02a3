package iampolicy_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/iampolicy"
	"github.com/sandgate/sandgate/infra/local/identity"
)

func TestCheckPolicies_AcceptsWhatTheStackSupplies(t *testing.T) {
	// The kinds of statement template.yaml holds, and the per-user isolation policy.
	ok := []identity.Policy{
		{Name: "ConnectRole/connect", Document: doc(
			map[string]any{"Effect": "Allow", "Action": "ecs:RunTask", "Resource": "*",
				"Condition": map[string]any{"ArnEquals": map[string]any{"ecs:cluster": clusterARN}}},
			map[string]any{"Effect": "Allow", "Action": "ecs:TagResource", "Resource": "*",
				"Condition": map[string]any{"StringEquals": map[string]any{"ecs:CreateAction": "RunTask"}}},
			map[string]any{"Effect": "Allow", "Action": "iam:PassRole", "Resource": taskRole,
				"Condition": map[string]any{"StringEquals": map[string]any{"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
			map[string]any{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
				"Condition": map[string]any{"StringLike": map[string]any{"s3:prefix": []string{"users/*"}}}},
			map[string]any{"Effect": "Deny", "Action": "*", "Resource": "*",
				"Condition": map[string]any{"BoolIfExists": map[string]any{"aws:SecureTransport": false}}},
		)},
		{Name: "Tenant/own", Document: ownItems(map[string]any{"Null": map[string]any{"dynamodb:LeadingKeys": "false"}})},
		{Name: "Sched/AssumeRolePolicyDocument", Document: doc(map[string]any{"Effect": "Allow",
			"Principal": map[string]any{"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole",
			"Condition": map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": account}}})},
		{Name: "Vars/literal", Document: doc(map[string]any{"Effect": "Allow", "Action": "s3:GetObject",
			"Resource": "arn:aws:s3:::b/${aws:PrincipalTag/team}/${*}"})},
	}
	if err := iampolicy.CheckPolicies(ok...); err != nil {
		t.Errorf("%v", err)
	}
}

func TestCheckPolicies_RefusesWhatTheStackCannotSupply(t *testing.T) {
	for name, tc := range map[string]struct {
		statement map[string]any
		want      string
	}{
		"source ip": {map[string]any{"Effect": "Deny", "Action": "*", "Resource": "*",
			"Condition": map[string]any{"NotIpAddress": map[string]any{"aws:SourceIp": "10.0.0.0/8"}}}, "aws:SourceIp"},
		"vpc endpoint": {map[string]any{"Effect": "Deny", "Action": "s3:*", "Resource": "*",
			"Condition": map[string]any{"StringNotEqualsIfExists": map[string]any{"aws:SourceVpce": "vpce-1"}}}, "aws:SourceVpce"},
		"current time": {map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
			"Condition": map[string]any{"DateLessThan": map[string]any{"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}, "aws:CurrentTime"},
		"resource tag": {map[string]any{"Effect": "Allow", "Action": "ecs:StopTask", "Resource": "*",
			"Condition": map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/user": "u1"}}}, "aws:ResourceTag/user"},
		"variable in resource": {map[string]any{"Effect": "Allow", "Action": "s3:GetObject",
			"Resource": "arn:aws:s3:::b/${aws:SourceIp}/*"}, "${aws:SourceIp}"},
		"variable in condition": {map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
			"Condition": map[string]any{"StringEquals": map[string]any{"aws:PrincipalTag/x": "${aws:EpochTime}"}}}, "${aws:EpochTime}"},
		"unknown operator": {map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
			"Condition": map[string]any{"StringEqualz": map[string]any{"aws:PrincipalTag/x": "y"}}}, "StringEqualz"},
		"unknown set operator": {map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
			"Condition": map[string]any{"ForSomeValues:StringEquals": map[string]any{"aws:TagKeys": "y"}}}, "ForSomeValues"},
		"null if exists": {map[string]any{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
			"Condition": map[string]any{"NullIfExists": map[string]any{"aws:PrincipalTag/x": "true"}}}, "NullIfExists"},
	} {
		st := tc.statement
		st["Sid"] = "S"
		err := iampolicy.CheckPolicies(identity.Policy{Name: "R/p", Document: doc(st)})
		var ue *identity.UnsupportedError
		if !errors.Is(err, identity.ErrUnsupported) || !errors.As(err, &ue) {
			t.Errorf("%s: %v, want an UnsupportedError", name, err)
			continue
		}
		if !strings.Contains(ue.Detail, tc.want) || ue.Resource != "R/p#S" {
			t.Errorf("%s: %v, want it to name %s in R/p#S", name, err, tc.want)
		}
	}
}

func TestCheckRoles_ChecksTrustPolicies(t *testing.T) {
	role := &identity.Role{Name: "R", Trust: doc(map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": "lambda.amazonaws.com"},
		"Action": "sts:AssumeRole", "Condition": map[string]any{"ArnLike": map[string]any{"aws:SourceArn": "arn:aws:lambda:*"}}})}
	err := iampolicy.CheckRoles(role)
	if !errors.Is(err, identity.ErrUnsupported) || !strings.Contains(err.Error(), "aws:SourceArn") || !strings.Contains(err.Error(), "R/AssumeRolePolicyDocument#1") {
		t.Errorf("%v, want aws:SourceArn refused in the trust policy", err)
	}
	// Several problems come back together.
	two := identity.Policy{Name: "R/two", Document: json.RawMessage(`{"Statement":[
		{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"1.2.3.4"}}},
		{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"true"}}}]}`)}
	err = iampolicy.CheckPolicies(two)
	if !strings.Contains(err.Error(), "aws:SourceIp") || !strings.Contains(err.Error(), "aws:MultiFactorAuthPresent") {
		t.Errorf("%v, want both keys named", err)
	}
}
