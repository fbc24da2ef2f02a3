package stackref

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/sandgate/sandgate/infra/preflight"
	"github.com/sandgate/sandgate/internal/awsconf"
)

// DefaultStack is the stack name when neither a flag nor samconfig.toml gives one.
const DefaultStack = "sandgate"

// ErrUsage: the flags or samconfig.toml cannot name a stack (a config file that does
// not parse, no region); the command should exit with its usage code.
var ErrUsage = errors.New("usage")

// Flags are the options that name a deployed stack.
type Flags struct {
	StackName, ConfigFile, ConfigEnv, Region, Profile string

	fl *flag.FlagSet
}

// Register adds -stack-name, -config-file, -config-env, -region and -profile to fl.
func (f *Flags) Register(fl *flag.FlagSet) {
	f.fl = fl
	fl.StringVar(&f.StackName, "stack-name", "", "the stack (default: samconfig.toml's stack_name, else "+DefaultStack+")")
	fl.StringVar(&f.ConfigFile, "config-file", "samconfig.toml", "samconfig.toml to read stack_name, region and profile from (ignored when the default is absent)")
	fl.StringVar(&f.ConfigEnv, "config-env", preflight.DefaultConfigEnv, "the samconfig.toml environment, as sam deploy --config-env")
	fl.StringVar(&f.Region, "region", "", "AWS region (default: samconfig.toml's, else AWS_REGION or the profile's)")
	fl.StringVar(&f.Profile, "profile", "", "AWS profile (default: samconfig.toml's, else AWS_PROFILE)")
}

// Stack is the stack the flags name, and the AWS configuration to reach it with.
type Stack struct {
	// Name, Region and Profile as resolved; Profile "" is the default chain's.
	Name, Region, Profile string
	// Samconfig is what samconfig.toml said (empty when there is none).
	Samconfig *preflight.Samconfig
	AWS       aws.Config
}

// Resolve reads samconfig.toml (a missing default file is no error) and loads the AWS
// configuration for the region and profile: flags first, then samconfig.toml, then
// the operator's usual configuration. opts are added to the load. A config file that
// cannot be read, or no region at all, is ErrUsage.
func (f *Flags) Resolve(ctx context.Context, opts ...func(*config.LoadOptions) error) (*Stack, error) {
	explicitFile := false
	if f.fl != nil {
		f.fl.Visit(func(fl *flag.Flag) { explicitFile = explicitFile || fl.Name == "config-file" })
	}
	sc, err := preflight.ReadSamconfig(f.ConfigFile, f.ConfigEnv)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !explicitFile:
		sc = &preflight.Samconfig{}
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	s := &Stack{Name: FirstOf(f.StackName, sc.StackName, DefaultStack), Profile: FirstOf(f.Profile, sc.Profile), Samconfig: sc}
	if r := FirstOf(f.Region, sc.Region); r != "" {
		opts = append(opts, config.WithRegion(r))
	}
	if s.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(s.Profile))
	}
	cfg, err := awsconf.Load(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load the AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("%w: no region: pass -region, set region in samconfig.toml's deploy parameters, or export AWS_REGION", ErrUsage)
	}
	s.AWS, s.Region = cfg, cfg.Region
	return s, nil
}

// FirstOf returns the first non-empty value.
func FirstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
