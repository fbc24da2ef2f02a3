package template

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// TypeTaskDefinition is the ECS task definition resource the local stack runs.
const TypeTaskDefinition = "AWS::ECS::TaskDefinition"

// TaskDefinition is the part of an AWS::ECS::TaskDefinition the local stack needs to
// run its containers as processes.
type TaskDefinition struct {
	LogicalID string
	Family    string
	// Cpu (units) and Memory (MiB), 0 when unset.
	Cpu, Memory int
	Containers  []*Container
	// ExecutionRole and TaskRole are the roles' ARNs: what ECS uses to start the task
	// (logs, secrets) and what the task's code gets (read with Options.Roles).
	ExecutionRole, TaskRole string
}

// Container is one container definition.
type Container struct {
	Name string
	// Environment is the container's Environment, resolved.
	Environment map[string]string
	// Ports are the container ports of PortMappings.
	Ports []int
	// StopTimeout is the wait between SIGTERM and SIGKILL, 0 when unset.
	StopTimeout time.Duration
	// Mounts maps a container path to its volume name.
	Mounts map[string]string
	// Secrets maps a variable to the Secrets Manager reference (an ARN, optionally
	// with :json-key:version-stage:version-id) ECS reads it from with the execution
	// role; LogGroup is the awslogs group. Read with Options.Roles.
	Secrets  map[string]string
	LogGroup string
	// User is the container's User ("uid", "uid:gid" or a name), "" when unset: the
	// image's user.
	User string
	// AddCapabilities and DropCapabilities are LinuxParameters.Capabilities' Add and
	// Drop: Linux capabilities, named as Docker names them (CHOWN, SYS_PTRACE, …),
	// added to or dropped from the default set the container starts with.
	AddCapabilities, DropCapabilities []string
}

func (e *evaluator) readTaskDefinition(r *Resource) (*TaskDefinition, error) {
	base := "Resources." + r.LogicalID + ".Properties"
	td := &TaskDefinition{LogicalID: r.LogicalID}
	var err error
	if td.Family, err = e.optStr(r.Properties, "Family", base); err != nil {
		return nil, err
	}
	if td.Cpu, err = e.optPosInt(r.Properties, "Cpu", base, 0); err != nil {
		return nil, err
	}
	if td.Memory, err = e.optPosInt(r.Properties, "Memory", base, 0); err != nil {
		return nil, err
	}
	if e.identities {
		if td.ExecutionRole, err = e.optStr(r.Properties, "ExecutionRoleArn", base); err != nil {
			return nil, err
		}
		if td.TaskRole, err = e.optStr(r.Properties, "TaskRoleArn", base); err != nil {
			return nil, err
		}
	}
	defs := deref(Lookup(r.Properties, "ContainerDefinitions"))
	if defs == nil {
		return td, nil
	}
	if defs.Kind != yaml.SequenceNode {
		return nil, pathErrf(base+".ContainerDefinitions", ErrInvalid, "want a list of container definitions")
	}
	for i, n := range defs.Content {
		c, err := e.readContainer(deref(n), base+".ContainerDefinitions["+itoa(i)+"]")
		if err != nil {
			return nil, err
		}
		td.Containers = append(td.Containers, c)
	}
	return td, nil
}

// readContainer reads only the properties the stack uses, so references elsewhere in the
// definition (the image, the log group) need no local value.
func (e *evaluator) readContainer(n *yaml.Node, path string) (*Container, error) {
	c := &Container{Environment: map[string]string{}, Mounts: map[string]string{}}
	var err error
	if c.Name, err = e.optStr(n, "Name", path); err != nil {
		return nil, err
	}
	err = e.eachMap(n, "Environment", path, func(kv map[string]any, item string) error {
		name, _ := kv["Name"].(string)
		if name == "" {
			return pathErrf(item, ErrInvalid, "want {Name, Value}")
		}
		value, _ := kv["Value"].(string)
		value, err := e.dynamic(value, path+".Environment."+name)
		if err != nil {
			return err
		}
		c.Environment[name] = value
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = e.eachMap(n, "PortMappings", path, func(m map[string]any, item string) error {
		p, err := atoiPositive(m["ContainerPort"])
		if err != nil {
			return pathErrf(item+".ContainerPort", ErrInvalid, "%v", err)
		}
		c.Ports = append(c.Ports, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if c.StopTimeout, err = e.optSeconds(n, "StopTimeout", path, 0); err != nil {
		return nil, err
	}
	if e.identities {
		c.Secrets = map[string]string{}
		err = e.eachMap(n, "Secrets", path, func(m map[string]any, item string) error {
			name, _ := m["Name"].(string)
			from, _ := m["ValueFrom"].(string)
			if name == "" || from == "" {
				return pathErrf(item, ErrInvalid, "want {Name, ValueFrom}")
			}
			c.Secrets[name] = from
			return nil
		})
		if err != nil {
			return nil, err
		}
		lc := Lookup(n, "LogConfiguration")
		if c.LogGroup, err = e.optStr(Lookup(lc, "Options"), "awslogs-group", path+".LogConfiguration.Options"); err != nil {
			return nil, err
		}
	}
	if c.User, err = e.optStr(n, "User", path); err != nil {
		return nil, err
	}
	caps := Lookup(n, "LinuxParameters", "Capabilities")
	capsPath := path + ".LinuxParameters.Capabilities"
	if c.AddCapabilities, err = e.strList(caps, "Add", capsPath); err != nil {
		return nil, err
	}
	if c.DropCapabilities, err = e.strList(caps, "Drop", capsPath); err != nil {
		return nil, err
	}
	err = e.eachMap(n, "MountPoints", path, func(m map[string]any, item string) error {
		p, _ := m["ContainerPath"].(string)
		v, _ := m["SourceVolume"].(string)
		if p == "" || v == "" {
			return pathErrf(item, ErrInvalid, "want {SourceVolume, ContainerPath}")
		}
		c.Mounts[p] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// eachMap evaluates the list property key of m and calls fn with each item (nil when
// it is not a map) and the item's path.
func (e *evaluator) eachMap(m *yaml.Node, key, path string, fn func(item map[string]any, path string) error) error {
	n := Lookup(m, key)
	if n == nil {
		return nil
	}
	path += "." + key
	list, err := e.list(n, path)
	if err != nil {
		return err
	}
	for i, v := range list {
		item, _ := v.(map[string]any)
		if err := fn(item, path+"["+itoa(i)+"]"); err != nil {
			return err
		}
	}
	return nil
}

// strList evaluates the list property key of m, a list of strings; nil when absent.
func (e *evaluator) strList(m *yaml.Node, key, path string) ([]string, error) {
	n := Lookup(m, key)
	if n == nil {
		return nil, nil
	}
	path += "." + key
	list, err := e.list(n, path)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(list))
	for i, v := range list {
		s, ok := v.(string)
		if !ok {
			return nil, pathErrf(path+"["+itoa(i)+"]", ErrInvalid, "want a string, got %s", kind(v))
		}
		out = append(out, s)
	}
	return out, nil
}

func itoa(i int) string { return strconv.Itoa(i) }

// atoiPositive accepts a positive integer given as a YAML number or string.
func atoiPositive(v any) (int, error) {
	s, _ := v.(string)
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive integer, got %v", v)
	}
	return n, nil
}
