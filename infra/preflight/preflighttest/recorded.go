package preflighttest

import (
	"fmt"
	"net/http"
)

// The account the recorded answers describe: AWS's documentation account, in Ireland.
const (
	AccountID = "123456789012"
	Region    = "eu-west-1"
	// Bucket is the bucket s3local serves.
	Bucket = "sandgate-preflight-test"
	// Repository and Tag name the sandbox image the answers describe; Image is its URI.
	Repository = "sandgate-sandbox"
	Tag        = "3f2a1bc0c0de"
	Image      = AccountID + ".dkr.ecr." + Region + ".amazonaws.com/" + Repository + ":" + Tag
	// IndexDigest is the image index's digest; Arm64Digest its linux/arm64 manifest's.
	IndexDigest  = "sha256:5e7c0a1b8d9f2e3a4b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2"
	Arm64Digest  = "sha256:9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
	ConfigDigest = "sha256:0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d"
	// The network: two private subnets routing to NAT gateways, a public one to the
	// internet gateway.
	VPC           = "vpc-0a1b2c3d4e5f60000"
	SubnetA       = "subnet-0a1b2c3d4e5f6000a"
	SubnetB       = "subnet-0a1b2c3d4e5f6000b"
	PublicSubnet  = "subnet-0a1b2c3d4e5f6000c"
	PrivateTableA = "rtb-0a1b2c3d4e5f6000a"
	PrivateTableB = "rtb-0a1b2c3d4e5f6000b"
	PublicTable   = "rtb-0a1b2c3d4e5f6000c"
	NATGatewayA   = "nat-0a1b2c3d4e5f6000a"
	NATGatewayB   = "nat-0a1b2c3d4e5f6000b"
	IGW           = "igw-0a1b2c3d4e5f60000"
)

// Namespaces of the Query protocol services' documents.
const (
	IAMNamespace = "https://iam.amazonaws.com/doc/2010-05-08/"
	STSNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	EC2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"
)

// Passing is an account every check passes in: the answers of the services the local
// stack has no emulator for (and of the S3 call s3local does not serve), as the AWS
// API references document them.
func Passing() map[string]Answer {
	return map[string]Answer{
		"iam:GetRole":                   {Body: GetRoleECS},
		"ecr:DescribeImages":            {Body: DescribeImagesIndex},
		"ecr:BatchGetImage":             {Body: BatchGetImageIndex},
		"ecr:DescribeRepositories":      {Body: DescribeRepositories("IMMUTABLE")},
		"ecr:GetDownloadUrlForLayer":    {Body: GetDownloadURLForLayer},
		"ecr:blob":                      {ContentType: "application/vnd.oci.image.config.v1+json", Body: ImageConfig("arm64")},
		"ec2:DescribeSubnets":           {Body: DescribeSubnets(SubnetA, SubnetB)},
		"ec2:DescribeRouteTables":       {Body: DescribeRouteTables(PrivateRoute(NATGatewayA), PrivateRoute(NATGatewayB))},
		"ec2:DescribeVpcEndpoints":      {Body: DescribeVpcEndpoints(GatewayEndpoint("s3"), GatewayEndpoint("dynamodb"))},
		"lambda:GetAccountSettings":     {Body: GetAccountSettings(1000, 1000)},
		"servicequotas:GetServiceQuota": {Body: GetServiceQuota("L-3032A538", "Fargate On-Demand vCPU resource count", 100)},
		"s3:GetPublicAccessBlock":       {Body: PublicAccessBlock(true, true, true, true)},
	}
}

// GetRoleECS is iam:GetRole of the ECS service-linked role
// (https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetRole.html, its example).
const GetRoleECS = `<GetRoleResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetRoleResult>
    <Role>
      <Path>/aws-service-role/ecs.amazonaws.com/</Path>
      <AssumeRolePolicyDocument>%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Principal%22%3A%7B%22Service%22%3A%22ecs.amazonaws.com%22%7D%2C%22Action%22%3A%22sts%3AAssumeRole%22%7D%5D%7D</AssumeRolePolicyDocument>
      <MaxSessionDuration>3600</MaxSessionDuration>
      <RoleId>AROA2ECSEXAMPLEROLEID</RoleId>
      <RoleLastUsed/>
      <RoleName>AWSServiceRoleForECS</RoleName>
      <Description>Role to enable Amazon ECS to manage your cluster.</Description>
      <Arn>arn:aws:iam::123456789012:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS</Arn>
      <CreateDate>2024-03-04T10:21:07Z</CreateDate>
    </Role>
  </GetRoleResult>
  <ResponseMetadata>
    <RequestId>df37e965-9967-11e1-a4c3-270EXAMPLE04</RequestId>
  </ResponseMetadata>
</GetRoleResponse>`

// NoSuchRoleECS is iam:GetRole's answer in an account without the role: NoSuchEntity,
// 404 (https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetRole.html#API_GetRole_Errors).
var NoSuchRoleECS = QueryError(http.StatusNotFound, IAMNamespace, "NoSuchEntity",
	"The role with name AWSServiceRoleForECS cannot be found.")

// DeniedIAM is IAM's AccessDenied for a caller without iam:GetRole
// (https://docs.aws.amazon.com/IAM/latest/APIReference/CommonErrors.html).
var DeniedIAM = QueryError(http.StatusForbidden, IAMNamespace, "AccessDenied",
	"User: arn:aws:iam::123456789012:user/viewer is not authorized to perform: iam:GetRole on resource: role AWSServiceRoleForECS because no identity-based policy allows the iam:GetRole action")

// DescribeImagesIndex is ecr:DescribeImages of the tag, an OCI image index as
// docker buildx pushes it
// (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_DescribeImages.html).
var DescribeImagesIndex = fmt.Sprintf(`{"imageDetails":[{"registryId":%q,"repositoryName":%q,"imageDigest":%q,"imageTags":[%q],"imageSizeInBytes":48213377,"imagePushedAt":1.764979200E9,"imageManifestMediaType":"application/vnd.oci.image.index.v1+json","lastRecordedPullTime":1.765065600E9}]}`,
	AccountID, Repository, IndexDigest, Tag)

// DescribeImagesSingle is ecr:DescribeImages of a single-platform image (an OCI
// manifest, as docker build without buildx pushes it).
var DescribeImagesSingle = fmt.Sprintf(`{"imageDetails":[{"registryId":%q,"repositoryName":%q,"imageDigest":%q,"imageTags":[%q],"imageSizeInBytes":47100112,"imagePushedAt":1.764979200E9,"imageManifestMediaType":"application/vnd.oci.image.manifest.v1+json"}]}`,
	AccountID, Repository, Arm64Digest, Tag)

// NoRepository and NoImage are ecr:DescribeImages' errors
// (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_DescribeImages.html#API_DescribeImages_Errors).
var (
	NoRepository = JSONError(http.StatusBadRequest, "RepositoryNotFoundException",
		"The repository with name 'sandgate-sandbox' does not exist in the registry with id '123456789012'")
	NoImage = JSONError(http.StatusBadRequest, "ImageNotFoundException",
		"The image with imageId {imageDigest:'null', imageTag:'3f2a1bc0c0de'} does not exist within the repository with name 'sandgate-sandbox' in the registry with id '123456789012'")
)

// Index is an OCI image index (https://github.com/opencontainers/image-spec/blob/main/image-index.md)
// with one manifest per platform given, plus the build attestation buildx adds
// (platform unknown/unknown).
func Index(platforms ...string) string {
	m := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`
	for i, p := range platforms {
		arch := p
		m += fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%064x","size":1612,"platform":{"architecture":%q,"os":"linux"}},`, i+1, arch)
	}
	m += `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + fmt.Sprintf("%064x", 99) + `","size":566,"annotations":{"vnd.docker.reference.digest":"sha256:` + fmt.Sprintf("%064x", 1) + `","vnd.docker.reference.type":"attestation-manifest"},"platform":{"architecture":"unknown","os":"unknown"}}]}`
	return m
}

// Manifest is a single-platform OCI manifest (https://github.com/opencontainers/image-spec/blob/main/manifest.md).
var Manifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + ConfigDigest + `","size":1480},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:` + fmt.Sprintf("%064x", 7) + `","size":3623807}]}`

// BatchGetImage answers ecr:BatchGetImage with manifest (a JSON document) of the given
// media type (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_BatchGetImage.html).
func BatchGetImage(digest, mediaType, manifest string) string {
	return fmt.Sprintf(`{"images":[{"registryId":%q,"repositoryName":%q,"imageId":{"imageDigest":%q,"imageTag":%q},"imageManifest":%q,"imageManifestMediaType":%q}],"failures":[]}`,
		AccountID, Repository, digest, Tag, manifest, mediaType)
}

// BatchGetImageIndex is the index of the passing account: linux/arm64 and linux/amd64.
var BatchGetImageIndex = BatchGetImage(IndexDigest, "application/vnd.oci.image.index.v1+json", Index("arm64", "amd64"))

// DescribeRepositories answers ecr:DescribeRepositories with the repository's tag
// mutability (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_DescribeRepositories.html).
func DescribeRepositories(mutability string) string {
	return fmt.Sprintf(`{"repositories":[{"repositoryArn":"arn:aws:ecr:%s:%s:repository/%s","registryId":%q,"repositoryName":%q,"repositoryUri":"%s.dkr.ecr.%s.amazonaws.com/%s","createdAt":1.764892800E9,"imageTagMutability":%q,"imageScanningConfiguration":{"scanOnPush":true},"encryptionConfiguration":{"encryptionType":"AES256"}}]}`,
		Region, AccountID, Repository, AccountID, Repository, AccountID, Region, Repository, mutability)
}

// GetDownloadURLForLayer hands out this server's blob address for the configuration
// (https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetDownloadUrlForLayer.html;
// ECR's own is a presigned S3 URL).
var GetDownloadURLForLayer = `{"downloadUrl":"` + Endpoint + BlobPath + ConfigDigest + `","layerDigest":"` + ConfigDigest + `"}`

// ImageConfig is an OCI image configuration for linux/arch (https://github.com/opencontainers/image-spec/blob/main/config.md).
func ImageConfig(arch string) string {
	return fmt.Sprintf(`{"architecture":%q,"os":"linux","config":{"User":"0","Entrypoint":["/usr/local/bin/sandgate-agent"]},"rootfs":{"type":"layers","diff_ids":["sha256:%064x"]}}`, arch, 8)
}

// DescribeSubnets answers ec2:DescribeSubnets with subnets of VPC, SubnetA in
// eu-west-1a and the others in eu-west-1b
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSubnets.html).
func DescribeSubnets(ids ...string) string {
	items := ""
	for i, id := range ids {
		zone, zoneID := "eu-west-1a", "euw1-az1"
		if i > 0 {
			zone, zoneID = "eu-west-1b", "euw1-az2"
		}
		items += fmt.Sprintf(`
    <item>
      <subnetId>%s</subnetId>
      <subnetArn>arn:aws:ec2:%s:%s:subnet/%s</subnetArn>
      <state>available</state>
      <ownerId>%s</ownerId>
      <vpcId>%s</vpcId>
      <cidrBlock>10.40.%d.0/20</cidrBlock>
      <ipv6CidrBlockAssociationSet/>
      <availableIpAddressCount>4089</availableIpAddressCount>
      <availabilityZone>%s</availabilityZone>
      <availabilityZoneId>%s</availabilityZoneId>
      <defaultForAz>false</defaultForAz>
      <mapPublicIpOnLaunch>false</mapPublicIpOnLaunch>
      <assignIpv6AddressOnCreation>false</assignIpv6AddressOnCreation>
      <tagSet/>
    </item>`, id, Region, AccountID, id, AccountID, VPC, 16*i, zone, zoneID)
	}
	return `<DescribeSubnetsResponse xmlns="` + EC2Namespace + `">
  <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
  <subnetSet>` + items + `
  </subnetSet>
</DescribeSubnetsResponse>`
}

// NoSubnet is ec2:DescribeSubnets' error for an id that does not exist
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html: InvalidSubnetID.NotFound).
func NoSubnet(id string) Answer {
	return EC2Error(http.StatusBadRequest, "InvalidSubnetID.NotFound", fmt.Sprintf("The subnet ID '%s' does not exist", id))
}

// DeniedEC2 is EC2's UnauthorizedOperation (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html).
var DeniedEC2 = EC2Error(http.StatusForbidden, "UnauthorizedOperation",
	"You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/viewer is not authorized to perform: ec2:DescribeSubnets because no identity-based policy allows the ec2:DescribeSubnets action")

// RouteTable is one routeTableSet item: the table, the subnet it is associated with
// ("" for none), whether it is the VPC's main table, and its 0.0.0.0/0 route as
// route XML ("" for none).
type RouteTable struct {
	ID, Subnet   string
	Main         bool
	DefaultRoute string
}

// PrivateRoute is the private table of SubnetA (with NATGatewayA) or SubnetB.
func PrivateRoute(nat string) RouteTable {
	if nat == NATGatewayB {
		return RouteTable{ID: PrivateTableB, Subnet: SubnetB, DefaultRoute: NATRoute(nat)}
	}
	return RouteTable{ID: PrivateTableA, Subnet: SubnetA, DefaultRoute: NATRoute(nat)}
}

// NATRoute, IGWRoute and BlackholeRoute are 0.0.0.0/0 routes.
func NATRoute(nat string) string {
	return `<destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><natGatewayId>` + nat + `</natGatewayId><state>active</state><origin>CreateRoute</origin>`
}

// IGWRoute sends 0.0.0.0/0 to the internet gateway.
func IGWRoute() string {
	return `<destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><gatewayId>` + IGW + `</gatewayId><state>active</state><origin>CreateRoute</origin>`
}

// BlackholeRoute is a route whose NAT gateway was deleted.
func BlackholeRoute(nat string) string {
	return `<destinationCidrBlock>0.0.0.0/0</destinationCidrBlock><natGatewayId>` + nat + `</natGatewayId><state>blackhole</state><origin>CreateRoute</origin>`
}

// DescribeRouteTables answers ec2:DescribeRouteTables with tables, followed by the
// VPC's main table (public: 0.0.0.0/0 to the internet gateway, no subnet associated)
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeRouteTables.html).
func DescribeRouteTables(tables ...RouteTable) string {
	tables = append(tables, RouteTable{ID: PublicTable, Main: true, DefaultRoute: IGWRoute()})
	items := ""
	for i, t := range tables {
		routes := `
        <item><destinationCidrBlock>10.40.0.0/16</destinationCidrBlock><gatewayId>local</gatewayId><state>active</state><origin>CreateRouteTable</origin></item>`
		if t.DefaultRoute != "" {
			routes += `
        <item>` + t.DefaultRoute + `</item>`
		}
		routes += `
        <item><destinationPrefixListId>pl-6da54004</destinationPrefixListId><gatewayId>vpce-0a1b2c3d4e5f60s30</gatewayId><state>active</state><origin>CreateRoute</origin></item>`
		assoc := ""
		if t.Subnet != "" {
			assoc += fmt.Sprintf(`
        <item><routeTableAssociationId>rtbassoc-%017x</routeTableAssociationId><routeTableId>%s</routeTableId><subnetId>%s</subnetId><main>false</main><associationState><state>associated</state></associationState></item>`, i+1, t.ID, t.Subnet)
		}
		if t.Main {
			assoc += fmt.Sprintf(`
        <item><routeTableAssociationId>rtbassoc-%017x</routeTableAssociationId><routeTableId>%s</routeTableId><main>true</main><associationState><state>associated</state></associationState></item>`, 100+i, t.ID)
		}
		items += fmt.Sprintf(`
    <item>
      <routeTableId>%s</routeTableId>
      <vpcId>%s</vpcId>
      <ownerId>%s</ownerId>
      <routeSet>%s
      </routeSet>
      <associationSet>%s
      </associationSet>
      <propagatingVgwSet/>
      <tagSet/>
    </item>`, t.ID, VPC, AccountID, routes, assoc)
	}
	return `<DescribeRouteTablesResponse xmlns="` + EC2Namespace + `">
  <requestId>6f570b0b-9c18-4b07-bdec-73740dcf861a</requestId>
  <routeTableSet>` + items + `
  </routeTableSet>
</DescribeRouteTablesResponse>`
}

// GatewayEndpoint is an available gateway endpoint of service on both private tables;
// InterfaceEndpoint an available interface endpoint with private DNS as given.
func GatewayEndpoint(service string) string {
	return fmt.Sprintf(`
    <item>
      <vpcEndpointId>vpce-0a1b2c3d4e5f6%s</vpcEndpointId>
      <vpcEndpointType>Gateway</vpcEndpointType>
      <vpcId>%s</vpcId>
      <serviceName>com.amazonaws.%s.%s</serviceName>
      <state>available</state>
      <policyDocument>{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}</policyDocument>
      <routeTableIdSet><item>%s</item><item>%s</item></routeTableIdSet>
      <subnetIdSet/>
      <groupSet/>
      <privateDnsEnabled>false</privateDnsEnabled>
      <requesterManaged>false</requesterManaged>
      <networkInterfaceIdSet/>
      <dnsEntrySet/>
      <creationTimestamp>2026-12-01T09:00:00.000Z</creationTimestamp>
      <ownerId>%s</ownerId>
    </item>`, fmt.Sprintf("%04x", len(service)), VPC, Region, service, PrivateTableA, PrivateTableB, AccountID)
}

// InterfaceEndpoint is an available interface endpoint of service in SubnetA and SubnetB.
func InterfaceEndpoint(id, service string, privateDNS bool) string {
	return fmt.Sprintf(`
    <item>
      <vpcEndpointId>%s</vpcEndpointId>
      <vpcEndpointType>Interface</vpcEndpointType>
      <vpcId>%s</vpcId>
      <serviceName>com.amazonaws.%s.%s</serviceName>
      <state>available</state>
      <routeTableIdSet/>
      <subnetIdSet><item>%s</item><item>%s</item></subnetIdSet>
      <groupSet><item><groupId>sg-0a1b2c3d4e5f60000</groupId><groupName>endpoints</groupName></item></groupSet>
      <privateDnsEnabled>%t</privateDnsEnabled>
      <requesterManaged>false</requesterManaged>
      <networkInterfaceIdSet><item>eni-0a1b2c3d4e5f6000a</item><item>eni-0a1b2c3d4e5f6000b</item></networkInterfaceIdSet>
      <dnsEntrySet><item><dnsName>%s.%s.%s.vpce.amazonaws.com</dnsName><hostedZoneId>Z7HUB22UULQXV</hostedZoneId></item></dnsEntrySet>
      <creationTimestamp>2026-12-01T09:00:00.000Z</creationTimestamp>
      <ownerId>%s</ownerId>
      <ipAddressType>ipv4</ipAddressType>
    </item>`, id, VPC, Region, service, SubnetA, SubnetB, privateDNS, id, service, Region, AccountID)
}

// DescribeVpcEndpoints answers ec2:DescribeVpcEndpoints with the items given
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVpcEndpoints.html).
func DescribeVpcEndpoints(items ...string) string {
	s := `<DescribeVpcEndpointsResponse xmlns="` + EC2Namespace + `">
  <requestId>19a9ff46-7df6-49b8-9726-3df27527089d</requestId>
  <vpcEndpointSet>`
	for _, it := range items {
		s += it
	}
	return s + `
  </vpcEndpointSet>
</DescribeVpcEndpointsResponse>`
}

// GetAccountSettings answers lambda:GetAccountSettings
// (https://docs.aws.amazon.com/lambda/latest/api/API_GetAccountSettings.html).
func GetAccountSettings(concurrent, unreserved int) string {
	return fmt.Sprintf(`{"AccountLimit":{"CodeSizeUnzipped":262144000,"CodeSizeZipped":52428800,"ConcurrentExecutions":%d,"TotalCodeSize":80530636800,"UnreservedConcurrentExecutions":%d},"AccountUsage":{"FunctionCount":7,"TotalCodeSize":41943040}}`,
		concurrent, unreserved)
}

// DeniedLambda is Lambda's AccessDeniedException (https://docs.aws.amazon.com/lambda/latest/api/CommonErrors.html).
var DeniedLambda = RESTJSONError(http.StatusForbidden, "AccessDeniedException",
	"User: arn:aws:iam::123456789012:user/viewer is not authorized to perform: lambda:GetAccountSettings on resource: * because no identity-based policy allows the lambda:GetAccountSettings action")

// GetServiceQuota answers servicequotas:GetServiceQuota (and GetAWSDefaultServiceQuota,
// the same shape) for a Fargate quota
// (https://docs.aws.amazon.com/servicequotas/2019-06-24/apireference/API_GetServiceQuota.html).
func GetServiceQuota(code, name string, value float64) string {
	return fmt.Sprintf(`{"Quota":{"ServiceCode":"fargate","ServiceName":"AWS Fargate","QuotaArn":"arn:aws:servicequotas:%s:%s:fargate/%s","QuotaCode":%q,"QuotaName":%q,"Value":%g,"Unit":"None","Adjustable":true,"GlobalQuota":false,"UsageMetric":{"MetricNamespace":"AWS/Usage","MetricName":"ResourceCount","MetricDimensions":{"Class":"Standard/OnDemand","Resource":"vCPU","Service":"Fargate","Type":"Resource"},"MetricStatisticRecommendation":"Maximum"},"QuotaAppliedAtLevel":"ACCOUNT"}}`,
		Region, AccountID, code, code, name, value)
}

// NoSuchQuota is GetServiceQuota's NoSuchResourceException, for a quota with no
// applied value (https://docs.aws.amazon.com/servicequotas/2019-06-24/apireference/API_GetServiceQuota.html#API_GetServiceQuota_Errors).
var NoSuchQuota = JSONError(http.StatusBadRequest, "NoSuchResourceException", "The request failed because the specified service quota does not exist.")

// PublicAccessBlock answers s3:GetPublicAccessBlock
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetPublicAccessBlock.html).
func PublicAccessBlock(blockACLs, ignoreACLs, blockPolicy, restrict bool) string {
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<PublicAccessBlockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <BlockPublicAcls>%t</BlockPublicAcls>
  <IgnorePublicAcls>%t</IgnorePublicAcls>
  <BlockPublicPolicy>%t</BlockPublicPolicy>
  <RestrictPublicBuckets>%t</RestrictPublicBuckets>
</PublicAccessBlockConfiguration>`, blockACLs, ignoreACLs, blockPolicy, restrict)
}

// NoPublicAccessBlock is GetPublicAccessBlock's 404 for a bucket without one
// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html: NoSuchPublicAccessBlockConfiguration).
var NoPublicAccessBlock = S3Error(http.StatusNotFound, "NoSuchPublicAccessBlockConfiguration", "The public access block configuration was not found")

// BucketElsewhere is HeadBucket at the wrong region's endpoint: 301, no body, the
// bucket's region in x-amz-bucket-region
// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html).
func BucketElsewhere(region string) Answer {
	return Answer{Status: http.StatusMovedPermanently, Header: map[string]string{"X-Amz-Bucket-Region": region}}
}

// BinarySecret is secretsmanager:GetSecretValue of a secret stored as SecretBinary
// (https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html).
const BinarySecret = `{"ARN":"arn:aws:secretsmanager:eu-west-1:123456789012:secret:sandgate/signing-secrets-AbCdEf","Name":"sandgate/signing-secrets","VersionId":"a1b2c3d4-5678-90ab-cdef-EXAMPLE11111","SecretBinary":"c2VjcmV0","VersionStages":["AWSCURRENT"],"CreatedDate":1.764979200E9}`

// InvalidToken is STS's answer to an access key it does not know
// (https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html).
var InvalidToken = QueryError(http.StatusForbidden, STSNamespace, "InvalidClientTokenId", "The security token included in the request is invalid.")
