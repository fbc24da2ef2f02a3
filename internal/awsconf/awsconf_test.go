package awsconf_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/sandgate/sandgate/internal/awsconf"
)

// AWS_CA_BUNDLE is set on CI machines; the configuration must load with and without it.
func TestLoad_WithAndWithoutCABundle(t *testing.T) {
	for _, bundle := range []string{"", "/etc/ssl/certs/ca-certificates.crt"} {
		t.Setenv("AWS_CA_BUNDLE", bundle)
		cfg, err := awsconf.Load(context.Background(), awsconf.Loopback("http://127.0.0.1:1")...)
		if err != nil {
			t.Fatalf("AWS_CA_BUNDLE=%q: %v", bundle, err)
		}
		if cfg.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired ||
			cfg.ResponseChecksumValidation != aws.ResponseChecksumValidationWhenRequired {
			t.Fatalf("checksums: %v %v", cfg.RequestChecksumCalculation, cfg.ResponseChecksumValidation)
		}
		if cfg.BaseEndpoint == nil || *cfg.BaseEndpoint != "http://127.0.0.1:1" || cfg.Region != "us-east-1" {
			t.Fatalf("endpoint %v region %q", cfg.BaseEndpoint, cfg.Region)
		}
	}
}
