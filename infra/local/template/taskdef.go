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
}

// Container is one container definition.
type Container struct {
	Name string
	// Environment is the container's Environment, resolved; Secrets are not read (the
	// local stack has no Secrets Manager).
	Environment map[string]string
	// Ports are the container ports of PortMappings.
	Ports []int
	// StopTimeout is the wait between SIGTERM and SIGKILL, 0 when unset.
	StopTimeout time.Duration
	// Mounts maps a container path to its volume name.
	Mounts map[string]string
}

func (e *evaluator) readTaskDefinition(r *resource) (*TaskDefinition, error) {
	base := "Resources." + r.id + ".Properties"
	td := &TaskDefinition{LogicalID: r.id}
	var err error
	if td.Family, err = e.optStr(r.props, "Family", base); err != nil {
		return nil, err
	}
	if n := lookup(r.props, "Cpu"); n != nil {
		if td.Cpu, err = e.posInt(n, base+".Cpu"); err != nil {
			return nil, err
		}
	}
	if n := lookup(r.props, "Memory"); n != nil {
		if td.Memory, err = e.posInt(n, base+".Memory"); err != nil {
			return nil, err
		}
	}
	defs := deref(lookup(r.props, "ContainerDefinitions"))
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
	if env := lookup(n, "Environment"); env != nil {
		list, err := e.list(env, path+".Environment")
		if err != nil {
			return nil, err
		}
		for i, item := range list {
			kv, ok := item.(map[string]any)
			name, _ := kv["Name"].(string)
			if !ok || name == "" {
				return nil, pathErrf(path+".Environment["+itoa(i)+"]", ErrInvalid, "want {Name, Value}")
			}
			value, _ := kv["Value"].(string)
			if value, err = e.dynamic(value, path+".Environment."+name); err != nil {
				return nil, err
			}
			c.Environment[name] = value
		}
	}
	if pm := lookup(n, "PortMappings"); pm != nil {
		list, err := e.list(pm, path+".PortMappings")
		if err != nil {
			return nil, err
		}
		for i, item := range list {
			m, _ := item.(map[string]any)
			p, err := atoiPositive(m["ContainerPort"])
			if err != nil {
				return nil, pathErrf(path+".PortMappings["+itoa(i)+"].ContainerPort", ErrInvalid, "%v", err)
			}
			c.Ports = append(c.Ports, p)
		}
	}
	if st := lookup(n, "StopTimeout"); st != nil {
		secs, err := e.posInt(st, path+".StopTimeout")
		if err != nil {
			return nil, err
		}
		c.StopTimeout = time.Duration(secs) * time.Second
	}
	if mp := lookup(n, "MountPoints"); mp != nil {
		list, err := e.list(mp, path+".MountPoints")
		if err != nil {
			return nil, err
		}
		for i, item := range list {
			m, _ := item.(map[string]any)
			p, _ := m["ContainerPath"].(string)
			v, _ := m["SourceVolume"].(string)
			if p == "" || v == "" {
				return nil, pathErrf(path+".MountPoints["+itoa(i)+"]", ErrInvalid, "want {SourceVolume, ContainerPath}")
			}
			c.Mounts[p] = v
		}
	}
	return c, nil
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
