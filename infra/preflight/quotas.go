package preflight

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/servicequotas"
	sqtypes "github.com/aws/aws-sdk-go-v2/service/servicequotas/types"
)

// Service Quotas codes (aws service-quotas list-service-quotas --service-code …).
const (
	// LambdaConcurrencyQuota is Lambda's "Concurrent executions".
	LambdaConcurrencyQuota = "L-B99A9384"
	// FargateOnDemandQuota is "Fargate On-Demand vCPU resource count".
	FargateOnDemandQuota = "L-3032A538"
	// FargateSpotQuota is "Fargate Spot vCPU resource count".
	FargateSpotQuota = "L-36FBB829"
)

// lambdaMinUnreserved is the concurrency Lambda keeps for functions without a
// reservation: a reservation may not bring the account's unreserved concurrency
// below it (https://docs.aws.amazon.com/lambda/latest/dg/configuration-concurrency.html).
const lambdaMinUnreserved = 100

// lambdaComfortable is the concurrency below which a new account's starting value is
// reported: 10 is common, and the stack's WebSocket frames are one invocation each.
const lambdaComfortable = 100

// AWS's documents disagree on Fargate Spot for ARM64 tasks: the ECS API reference
// supports it on platform version 1.4.0 or later (RunTask here names none, so LATEST,
// 1.4.0), the developer guide served for the China regions says ARM64 tasks do not
// support it.
const (
	fargateSpotArm64API   = "https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_CapacityProviderStrategyItem.html"
	fargateSpotArm64Guide = "https://docs.amazonaws.cn/en_us/AmazonECS/latest/developerguide/fargate-capacity-providers.html"
)

// checkLambdaConcurrency compares the account's concurrency (lambda:GetAccountSettings)
// with what the template's functions reserve.
func (c *Checker) checkLambdaConcurrency(ctx context.Context) Result {
	out, err := c.Lambda.GetAccountSettings(ctx, &lambda.GetAccountSettingsInput{})
	if err != nil {
		return failed(CheckLambdaConcurrency, "lambda:GetAccountSettings", err)
	}
	if out.AccountLimit == nil {
		return Result{Status: Fail, Summary: "lambda:GetAccountSettings answered no AccountLimit"}
	}
	total := int(out.AccountLimit.ConcurrentExecutions)
	unreserved := total
	if out.AccountLimit.UnreservedConcurrentExecutions != nil {
		unreserved = int(aws.ToInt32(out.AccountLimit.UnreservedConcurrentExecutions))
	}
	reserved := c.Stack.ReservedTotal()
	res := Result{Status: OK}
	request := func(n int) string {
		return fmt.Sprintf("aws service-quotas request-service-quota-increase --service-code lambda --quota-code %s --desired-value %d --region %s", LambdaConcurrencyQuota, n, c.Stack.Region)
	}
	if reserved > 0 {
		var parts []string
		for id, n := range c.Stack.Reserved {
			parts = append(parts, fmt.Sprintf("%s %d", id, n))
		}
		sort.Strings(parts)
		res.Details = append(res.Details, "reserved by the template: "+strings.Join(parts, ", "))
		if left := unreserved - reserved; left < lambdaMinUnreserved {
			res.Status = Fail
			res.Summary = fmt.Sprintf("the stack reserves %d of %d unreserved (account: %d); Lambda keeps at least %d unreserved, so the deploy would fail",
				reserved, unreserved, total, lambdaMinUnreserved)
			res.Details = append(res.Details, "on an update, the stack's own current reservations are already counted as reserved")
			res.Fix = request(total + lambdaMinUnreserved - left)
			return res
		}
		res.Summary = fmt.Sprintf("%d concurrent executions, %d unreserved; the stack reserves %d and leaves %d", total, unreserved, reserved, unreserved-reserved)
		return res
	}
	res.Summary = fmt.Sprintf("%d concurrent executions, %d unreserved; the template reserves none", total, unreserved)
	if total < lambdaComfortable {
		res.Status = Warn
		res.Details = append(res.Details, "new accounts often start at 10: the stack deploys, but every frame is an invocation, and throttles (FunctionThrottlesAlarm) begin at the quota")
		res.Fix = request(1000)
	}
	return res
}

// checkFargate compares the Fargate vCPU quota of the capacity provider the stack uses
// (servicequotas:GetServiceQuota, else its AWS default) with MaxSandboxes × SandboxCpu
// / 1024, and warns of Fargate Spot with an ARM64 task.
func (c *Checker) checkFargate(ctx context.Context) Result {
	maxSandboxes, ok1 := c.Stack.Number(ParamMaxSandboxes)
	cpu, ok2 := c.Stack.Number(ParamSandboxCPU)
	if !ok1 || !ok2 {
		return Result{Status: Skip, Summary: "not run: MaxSandboxes or SandboxCpu has no numeric value (see parameters)"}
	}
	provider, _ := c.Stack.Value(ParamCapacityProvider)
	code, name := FargateOnDemandQuota, "Fargate On-Demand vCPU resource count"
	if provider == "FARGATE_SPOT" {
		code, name = FargateSpotQuota, "Fargate Spot vCPU resource count"
	}
	need := maxSandboxes * cpu / 1024
	quota, source, err := c.quota(ctx, "fargate", code)
	if err != nil {
		return failed(CheckFargate, "servicequotas:GetServiceQuota", err)
	}
	res := Result{Status: OK,
		Summary: fmt.Sprintf("%s (%s) is %s vCPU%s; the stack needs %s (MaxSandboxes %s × SandboxCpu %s / 1024)",
			name, code, num(quota), source, num(need), num(maxSandboxes), num(cpu))}
	res.Details = append(res.Details, "the quota is shared with every other Fargate task of the account in "+c.Stack.Region)
	if quota < need {
		res.Status = Fail
		res.Fix = fmt.Sprintf("aws service-quotas request-service-quota-increase --service-code fargate --quota-code %s --desired-value %s --region %s (or lower MaxSandboxes to %s)",
			code, num(math.Ceil(need)), c.Stack.Region, num(math.Floor(quota*1024/cpu)))
	}
	if provider == "FARGATE_SPOT" && c.Stack.CPUArchitecture == "ARM64" {
		if res.Status == OK {
			res.Status = Warn
			res.Fix = "deploy with CapacityProvider=FARGATE unless Fargate Spot runs ARM64 in " + c.Stack.Region
		}
		res.Details = append(res.Details, "CapacityProvider=FARGATE_SPOT with an ARM64 task: the ECS API reference supports it on platform version 1.4.0 or later ("+
			fargateSpotArm64API+"), the China regions' developer guide says ARM64 tasks do not support Fargate Spot ("+fargateSpotArm64Guide+
			"); RunTask would fail where the latter holds: start one sandbox and watch StartFailures before relying on it")
	}
	return res
}

// quota returns a quota's applied value, or its AWS default when none is applied
// (GetServiceQuota answers NoSuchResourceException for some quotas never changed).
func (c *Checker) quota(ctx context.Context, service, code string) (float64, string, error) {
	out, err := c.Quotas.GetServiceQuota(ctx, &servicequotas.GetServiceQuotaInput{ServiceCode: aws.String(service), QuotaCode: aws.String(code)})
	var none *sqtypes.NoSuchResourceException
	if errors.As(err, &none) {
		def, derr := c.Quotas.GetAWSDefaultServiceQuota(ctx, &servicequotas.GetAWSDefaultServiceQuotaInput{ServiceCode: aws.String(service), QuotaCode: aws.String(code)})
		if derr != nil {
			return 0, "", derr
		}
		if def.Quota == nil || def.Quota.Value == nil {
			return 0, "", fmt.Errorf("no value for quota %s", code)
		}
		return aws.ToFloat64(def.Quota.Value), " (the AWS default)", nil
	}
	if err != nil {
		return 0, "", err
	}
	if out.Quota == nil || out.Quota.Value == nil {
		return 0, "", fmt.Errorf("no value for quota %s", code)
	}
	return aws.ToFloat64(out.Quota.Value), "", nil
}

// num writes a count without a needless fraction.
func num(f float64) string {
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%g", f)
}
