package preflight

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// endpoint is a VPC endpoint service the functions in the VPC (Connect, Message,
// Disconnect) or the sandbox tasks call, and who calls it. With a NAT route every one
// is optional: an endpoint keeps that traffic off the NAT gateway (gateway endpoints
// are free). Without one, these are all that could stand in for the internet — and
// they cannot, see internetOnly.
type endpoint struct {
	Service string // the part after com.amazonaws.<region>.
	Gateway bool   // a gateway endpoint (free) is available for it
	Users   string
}

// endpoints the stack's traffic could use, by what calls them.
var endpoints = []endpoint{
	{"dynamodb", true, "functions and tasks: the table"},
	{"s3", true, "tasks: the bucket, and ECR's image layers"},
	{"ecr.api", false, "tasks: image pulls (task execution role)"},
	{"ecr.dkr", false, "tasks: image pulls"},
	{"logs", false, "tasks: the awslogs driver"},
	{"ecs", false, "Connect: RunTask, DescribeTasks"},
	{"lambda", false, "Message: invoking Connect (Invoke API)"},
	{"secretsmanager", false, "tasks: R2 keys (task execution role)"},
	{"sts", false, "SDK calls that assume roles"},
}

// internetOnly is what the functions and tasks in the subnets call that no VPC
// endpoint serves, so the subnets need a route to the internet:
//   - the API Gateway management API of the WebSocket API (status frames, replies):
//     WebSocket APIs are Regional only and reached over the internet
//     (https://docs.aws.amazon.com/whitepapers/latest/best-practices-api-gateway-private-apis-integration/websocket-api.html);
//   - the credential vendor's Lambda function URL: function URLs are reachable over the
//     public internet only; Lambda's PrivateLink serves the Invoke API, not URLs
//     (https://docs.aws.amazon.com/lambda/latest/dg/lambda-urls.html);
//   - Cloudflare R2 (StorageEndpoint), when used.
const internetOnly = "the WebSocket management API (execute-api, public only), the credential vendor's function URL (public internet only) and, with StorageEndpoint, Cloudflare R2"

// noTable stands for a subnet without a route table (a VPC always has a main one).
const noTable = "(none)"

// route is where a subnet's 0.0.0.0/0 route goes.
type route struct {
	table, target, kind string // kind: nat, igw, other, blackhole, none
}

// checkSubnets checks that SubnetIds exist in one VPC and that each routes 0.0.0.0/0
// to a NAT gateway (ec2:DescribeSubnets, ec2:DescribeRouteTables), and reports the VPC
// endpoints (ec2:DescribeVpcEndpoints): which of endpoints exist, and an execute-api
// endpoint with private DNS, which breaks every call to the management API.
func (c *Checker) checkSubnets(ctx context.Context) Result {
	ids := c.Stack.List(ParamSubnetIDs)
	if len(ids) == 0 {
		return Result{Status: Skip, Summary: "not run: SubnetIds has no value (see parameters)"}
	}
	out, err := c.EC2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: ids})
	if err != nil {
		if strings.HasPrefix(errorCode(err), "InvalidSubnetID") {
			return Result{Status: Fail,
				Summary: fmt.Sprintf("SubnetIds: %s (region %s)", oneLine(apiMessage(err)), c.Stack.Region),
				Fix:     "use the network stack's SubnetIds output (aws cloudformation describe-stacks --stack-name sandgate-network) or infra/network to create subnets"}
		}
		return failed(CheckSubnets, "ec2:DescribeSubnets", err)
	}
	vpcs := map[string]bool{}
	zones := map[string]bool{}
	for _, s := range out.Subnets {
		vpcs[aws.ToString(s.VpcId)] = true
		zones[aws.ToString(s.AvailabilityZone)] = true
	}
	if len(vpcs) != 1 {
		return Result{Status: Fail,
			Summary: fmt.Sprintf("SubnetIds are in %d VPCs (%s); a function's subnets must share one VPC", len(vpcs), strings.Join(sortedKeys(vpcs), ", ")),
			Fix:     "choose subnets of one VPC"}
	}
	vpc := sortedKeys(vpcs)[0]

	tables, err := c.routeTables(ctx, vpc)
	if err != nil {
		return failed(CheckSubnets, "ec2:DescribeRouteTables", err)
	}
	inVPC, err := c.vpcEndpoints(ctx, vpc)
	if err != nil {
		return failed(CheckSubnets, "ec2:DescribeVpcEndpoints", err)
	}

	res := Result{Status: OK}
	var bad, unsure []string
	subnetTables := map[string]string{}
	for _, s := range out.Subnets {
		id := aws.ToString(s.SubnetId)
		r := defaultRoute(tables, id)
		subnetTables[id] = r.table
		line := fmt.Sprintf("%s (%s): route table %s, 0.0.0.0/0 → %s", id, aws.ToString(s.AvailabilityZone), r.table, r.target)
		switch r.kind {
		case "nat":
		case "igw":
			line += ": an internet gateway needs a public IP, which functions in a VPC never have and sandbox tasks do not get (assignPublicIp DISABLED)"
			bad = append(bad, id)
		case "blackhole":
			line += ": the target is gone (blackhole)"
			bad = append(bad, id)
		case "none":
			line = fmt.Sprintf("%s (%s): route table %s has no 0.0.0.0/0 route", id, aws.ToString(s.AvailabilityZone), r.table)
			bad = append(bad, id)
		default:
			line += ": not a NAT gateway; preflight cannot tell whether it reaches the internet"
			unsure = append(unsure, id)
		}
		res.Details = append(res.Details, line)
	}

	// The endpoints there are, and the execute-api trap.
	present := map[string]string{}
	var trap []string
	for _, e := range inVPC {
		if !strings.EqualFold(string(e.State), string(ec2types.StateAvailable)) {
			continue
		}
		svc := endpointService(aws.ToString(e.ServiceName), c.Stack.Region)
		if svc == "execute-api" && aws.ToBool(e.PrivateDnsEnabled) {
			trap = append(trap, aws.ToString(e.VpcEndpointId))
		}
		kind := strings.ToLower(string(e.VpcEndpointType))
		if e.VpcEndpointType == ec2types.VpcEndpointTypeGateway {
			// A gateway endpoint serves only the route tables it is associated with.
			off := map[string]bool{}
			for _, t := range subnetTables {
				if t != noTable && !slices.Contains(e.RouteTableIds, t) {
					off[t] = true
				}
			}
			if len(off) > 0 {
				kind += ", not on " + strings.Join(sortedKeys(off), ", ")
			}
		}
		present[svc] = kind
	}
	way := "goes through the NAT gateway"
	if len(bad) > 0 {
		way = "has no way out of these subnets either"
	}
	var have, lack []string
	for _, ep := range endpoints {
		if k, ok := present[ep.Service]; ok {
			have = append(have, fmt.Sprintf("%s (%s)", ep.Service, k))
		} else {
			lack = append(lack, ep.Service)
		}
	}
	switch {
	case len(have) == 0:
		res.Details = append(res.Details, "VPC endpoints: none; all AWS traffic "+way+" (S3 and DynamoDB gateway endpoints are free)")
	default:
		res.Details = append(res.Details, "VPC endpoints: "+strings.Join(have, ", "))
		if len(lack) > 0 {
			res.Details = append(res.Details, "no endpoint for "+strings.Join(lack, ", ")+": that traffic "+way)
		}
	}

	switch {
	case len(trap) > 0:
		res.Status = Fail
		res.Summary = fmt.Sprintf("%s in %s has private DNS on: inside the VPC it captures *.execute-api.%s.amazonaws.com, and every post to the WebSocket management API is refused (403)", strings.Join(trap, ", "), vpc, c.Stack.Region)
		res.Fix = "aws ec2 modify-vpc-endpoint --vpc-endpoint-id " + trap[0] + " --no-private-dns-enabled (or use subnets of another VPC)"
	case len(bad) > 0:
		res.Status = Fail
		res.Summary = fmt.Sprintf("%s cannot reach the internet, which %s need; no VPC endpoint serves those", strings.Join(bad, ", "), internetOnly)
		res.Fix = "use private subnets whose route table sends 0.0.0.0/0 to a NAT gateway (infra/network creates them): aws ec2 create-route --route-table-id <rtb> --destination-cidr-block 0.0.0.0/0 --nat-gateway-id <nat>"
	case len(unsure) > 0:
		res.Status = Warn
		res.Summary = fmt.Sprintf("%s route 0.0.0.0/0 through something other than a NAT gateway: make sure it reaches the internet (%s)", strings.Join(unsure, ", "), internetOnly)
	default:
		res.Summary = fmt.Sprintf("%d subnet(s) in %s, %d availability zone(s), each with a NAT gateway route", len(out.Subnets), vpc, len(zones))
		res.Details = append(res.Details, "reached only through the NAT gateway: "+internetOnly)
		if len(zones) < 2 {
			res.Status = Warn
			res.Fix = "add a subnet in a second availability zone: Lambda and Fargate keep working when one zone fails"
		}
	}
	return res
}

func (c *Checker) routeTables(ctx context.Context, vpc string) ([]ec2types.RouteTable, error) {
	var out []ec2types.RouteTable
	p := ec2.NewDescribeRouteTablesPaginator(c.EC2, &ec2.DescribeRouteTablesInput{
		Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.RouteTables...)
	}
	return out, nil
}

func (c *Checker) vpcEndpoints(ctx context.Context, vpc string) ([]ec2types.VpcEndpoint, error) {
	var out []ec2types.VpcEndpoint
	p := ec2.NewDescribeVpcEndpointsPaginator(c.EC2, &ec2.DescribeVpcEndpointsInput{
		Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpc}}}})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.VpcEndpoints...)
	}
	return out, nil
}

// defaultRoute finds the route table of a subnet (its own association, else the
// VPC's main table) and where it sends 0.0.0.0/0.
func defaultRoute(tables []ec2types.RouteTable, subnet string) route {
	var explicit, main *ec2types.RouteTable
	for i := range tables {
		for _, a := range tables[i].Associations {
			if aws.ToString(a.SubnetId) == subnet {
				explicit = &tables[i]
			}
			if aws.ToBool(a.Main) {
				main = &tables[i]
			}
		}
	}
	table := explicit
	if table == nil {
		table = main
	}
	if table == nil {
		return route{table: noTable, kind: "none"}
	}
	r := route{table: aws.ToString(table.RouteTableId), kind: "none"}
	for _, rt := range table.Routes {
		if aws.ToString(rt.DestinationCidrBlock) != "0.0.0.0/0" {
			continue
		}
		switch gw := aws.ToString(rt.GatewayId); {
		case rt.NatGatewayId != nil:
			r.target, r.kind = aws.ToString(rt.NatGatewayId), "nat"
		case strings.HasPrefix(gw, "igw-"):
			r.target, r.kind = gw, "igw"
		default:
			r.target, r.kind = firstNonEmpty(gw, aws.ToString(rt.TransitGatewayId), aws.ToString(rt.NetworkInterfaceId),
				aws.ToString(rt.InstanceId), aws.ToString(rt.VpcPeeringConnectionId), aws.ToString(rt.CoreNetworkArn),
				aws.ToString(rt.LocalGatewayId), aws.ToString(rt.CarrierGatewayId)), "other"
		}
		if rt.State == ec2types.RouteStateBlackhole {
			r.kind = "blackhole"
		}
		return r
	}
	return r
}

// endpointService is the service part of an endpoint's service name
// (com.amazonaws.<region>.<service>, cn.com.amazonaws.<region>.<service> in China).
func endpointService(name, region string) string {
	if _, svc, ok := strings.Cut(name, "."+region+"."); ok {
		return svc
	}
	return name
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return "(unknown)"
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
