package template

import "fmt"

// Resolver supplies what only the stack knows. Each method returns an error wrapping
// ErrUnresolved when it has no value.
type Resolver interface {
	// Ref returns the value of !Ref for a resource (its physical name, such as the
	// table name) or a pseudo parameter (AWS::Region, AWS::AccountId, AWS::StackName, ...).
	Ref(logicalID string) (string, error)
	// GetAtt returns the value of !GetAtt logicalID.attribute.
	GetAtt(logicalID, attribute string) (string, error)
	// Dynamic returns the value of a dynamic reference; reference is the text between
	// the braces, such as "resolve:secretsmanager:sandgate/signing-secrets:SecretString".
	Dynamic(reference string) (string, error)
}

// MapResolver is a Resolver over fixed maps, enough for tests and the local stack.
type MapResolver struct {
	// Refs maps logical ids and pseudo parameters to values.
	Refs map[string]string
	// Attrs maps "LogicalId.Attribute" to values.
	Attrs map[string]string
	// Dynamics maps dynamic references ("resolve:secretsmanager:NAME:SecretString") to values.
	Dynamics map[string]string
}

var (
	_ Resolver = MapResolver{}
	_ Resolver = written{}
)

// Ref implements Resolver.
func (m MapResolver) Ref(id string) (string, error) {
	if v, ok := m.Refs[id]; ok {
		return v, nil
	}
	return "", fmt.Errorf("%w: !Ref %s", ErrUnresolved, id)
}

// GetAtt implements Resolver.
func (m MapResolver) GetAtt(id, attr string) (string, error) {
	if v, ok := m.Attrs[id+"."+attr]; ok {
		return v, nil
	}
	return "", fmt.Errorf("%w: !GetAtt %s.%s", ErrUnresolved, id, attr)
}

// Dynamic implements Resolver.
func (m MapResolver) Dynamic(ref string) (string, error) {
	if v, ok := m.Dynamics[ref]; ok {
		return v, nil
	}
	return "", fmt.Errorf("%w: {{%s}}", ErrUnresolved, ref)
}

// written is the Resolver of symbolic evaluation: each reference evaluates to the text
// that writes it in a Fn::Sub, and a dynamic reference stays as written.
type written struct{}

func (written) Ref(id string) (string, error) { return "${" + id + "}", nil }

func (written) GetAtt(id, attr string) (string, error) { return "${" + id + "." + attr + "}", nil }

func (written) Dynamic(ref string) (string, error) { return "{{" + ref + "}}", nil }
