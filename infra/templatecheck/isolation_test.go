package templatecheck_test

import (
	"slices"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/internal/agent"
)

// The sandbox's process model in the task definition: the container runs as root only so
// the agent can start the workload under its own uid; the agent is PID 1 (no init
// process: it reaps orphans itself, as a child subreaper); every capability of Docker's
// default set that the agent does not need (agent.Capabilities says which it keeps, and
// why) is dropped, and none is added — SYS_PTRACE, the one Fargate would allow, least
// of all: it would let a process read another's memory.
func TestIsolation_SandboxTaskDefinition_ProcessModel(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			raw := loadRaw(t, templatePath, sc)
			td := raw.render(t, raw.Resources["SandboxTaskDefinition"].Properties).(map[string]any)
			c := list(td["ContainerDefinitions"])[0].(map[string]any)
			if u, ok := c["User"]; ok && u != "0" && u != "0:0" {
				t.Errorf("User %v, want root (0): the agent needs it to start the workload under another uid", u)
			}
			if c["Privileged"] != nil {
				t.Errorf("Privileged %v: Fargate refuses it, and the sandbox must never have it", c["Privileged"])
			}
			lp, _ := c["LinuxParameters"].(map[string]any)
			if lp["InitProcessEnabled"] != "false" {
				t.Errorf("InitProcessEnabled %v, want false: the agent is PID 1", lp["InitProcessEnabled"])
			}
			caps, _ := lp["Capabilities"].(map[string]any)
			if add := asStrings(caps["Add"]); len(add) > 0 {
				t.Errorf("Capabilities.Add %v: the sandbox adds none", add)
			}
			drop := asStrings(caps["Drop"])
			want := slices.DeleteFunc(slices.Clone(agent.DefaultCapabilities), func(c string) bool { return slices.Contains(agent.Capabilities, c) })
			if missing, extra := diff(set(want...), set(drop...)); len(missing)+len(extra) > 0 {
				t.Errorf("Capabilities.Drop lacks %v, has unexpected %v (Docker's defaults minus agent.Capabilities %v)", missing, extra, agent.Capabilities)
			}
			for _, kept := range agent.Capabilities {
				if !slices.Contains(agent.DefaultCapabilities, kept) {
					t.Errorf("agent.Capabilities has %s, which a Fargate container does not start with", kept)
				}
			}
			if len(drop) != len(set(drop...)) {
				t.Errorf("Capabilities.Drop repeats a name: %v", drop)
			}
		})
	}
}

// Functions and tasks are in separate security groups: the functions' VPC placement
// uses FunctionSecurityGroupIds only, the tasks' (SECURITY_GROUP_IDS, which the
// launcher passes to RunTask) SandboxSecurityGroupIds only, and neither list is the
// other's.
func TestIsolation_SecurityGroupParameters(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			raw := loadRaw(t, templatePath, sc)
			for _, name := range []string{"FunctionSecurityGroupIds", "SandboxSecurityGroupIds"} {
				p := raw.Parameters[name]
				if p == nil || p.Type != "List<AWS::EC2::SecurityGroup::Id>" {
					t.Fatalf("parameter %s: %+v, want a List<AWS::EC2::SecurityGroup::Id>", name, p)
				}
			}
			if raw.Parameters["SecurityGroupIds"] != nil {
				t.Error("the shared SecurityGroupIds parameter is back: one group for functions and tasks lets every task reach every agent")
			}
			if raw.value(t, "FunctionSecurityGroupIds") == raw.value(t, "SandboxSecurityGroupIds") {
				t.Fatal("the scenario gives both parameters one value; the checks below would be blind")
			}
			tpl, _ := loadModel(t, sc)
			for _, fn := range raw.ofType(t, "AWS::Serverless::Function") {
				if vpc := template.Lookup(fn.Properties, "VpcConfig", "SecurityGroupIds"); vpc != nil &&
					(!refersTo(vpc, "FunctionSecurityGroupIds") || refersTo(vpc, "SandboxSecurityGroupIds")) {
					t.Errorf("%s: VpcConfig.SecurityGroupIds %v, want FunctionSecurityGroupIds only", fn.LogicalID, template.Refs(vpc))
				}
				if env := template.Lookup(fn.Properties, "Environment", "Variables", "SECURITY_GROUP_IDS"); env != nil &&
					(!refersTo(env, "SandboxSecurityGroupIds") || refersTo(env, "FunctionSecurityGroupIds")) {
					t.Errorf("%s: SECURITY_GROUP_IDS %v, want SandboxSecurityGroupIds only", fn.LogicalID, template.Refs(env))
				}
				if got, ok := tpl.Functions[fn.LogicalID].Environment["SECURITY_GROUP_IDS"]; ok && got != raw.value(t, "SandboxSecurityGroupIds") {
					t.Errorf("%s: SECURITY_GROUP_IDS = %q, want the sandbox groups %q", fn.LogicalID, got, raw.value(t, "SandboxSecurityGroupIds"))
				}
			}
		})
	}
}

// The network stack's groups: the tasks' group accepts the agent port (AGENT_PORT of the
// task definition) from the functions' group and from nothing else — no address range,
// not itself, so no task reaches another; the functions' group accepts nothing; the
// functions may send to the agent port; and each output carries one group, named as
// the main stack's parameter it feeds.
func TestIsolation_NetworkSecurityGroups(t *testing.T) {
	main := loadRaw(t, templatePath, scenarios[0])
	mtd := main.render(t, main.Resources["SandboxTaskDefinition"].Properties).(map[string]any)
	agentPort := ""
	for _, e := range list(list(mtd["ContainerDefinitions"])[0].(map[string]any)["Environment"]) {
		if kv := e.(map[string]any); kv["Name"] == "AGENT_PORT" {
			agentPort = kv["Value"].(string)
		}
	}
	if agentPort == "" {
		t.Fatal("no AGENT_PORT in the task definition")
	}
	for _, endpoints := range []string{"true", "false"} {
		raw := loadRaw(t, networkTemplate, scenario{name: "endpoints-" + endpoints, params: map[string]string{"InterfaceEndpoints": endpoints}})
		const fnGroup, taskGroup = "${FunctionSecurityGroup}", "${SandboxSecurityGroup}"
		groups := map[string]map[string]any{}
		for _, g := range raw.ofType(t, "AWS::EC2::SecurityGroup") {
			groups["${"+g.LogicalID+"}"] = raw.render(t, g.Properties).(map[string]any)
		}
		for _, g := range []string{fnGroup, taskGroup} {
			if groups[g] == nil {
				t.Fatalf("no %s", g)
			}
			if in := list(groups[g]["SecurityGroupIngress"]); len(in) > 0 {
				t.Errorf("%s has inline ingress %v; want the agent port's rule alone, as a resource", g, in)
			}
		}
		// Every ingress rule, inline or a resource, with the group it opens.
		type rule struct {
			group string
			props map[string]any
		}
		var rules []rule
		for id, g := range groups {
			for _, r := range list(g["SecurityGroupIngress"]) {
				rules = append(rules, rule{id, r.(map[string]any)})
			}
		}
		for _, r := range raw.ofType(t, "AWS::EC2::SecurityGroupIngress") {
			p := raw.render(t, r.Properties).(map[string]any)
			rules = append(rules, rule{p["GroupId"].(string), p})
		}
		var agentRules int
		for _, r := range rules {
			if src, _ := r.props["SourceSecurityGroupId"].(string); src == r.group {
				t.Errorf("%s allows itself %v: its members reach each other", r.group, r.props)
			}
			switch r.group {
			case fnGroup:
				t.Errorf("the functions' group accepts %v; it accepts nothing", r.props)
			case taskGroup:
				agentRules++
				if r.props["SourceSecurityGroupId"] != fnGroup || r.props["IpProtocol"] != "tcp" ||
					r.props["FromPort"] != agentPort || r.props["ToPort"] != agentPort ||
					r.props["CidrIp"] != nil || r.props["CidrIpv6"] != nil || r.props["SourcePrefixListId"] != nil {
					t.Errorf("the tasks' group accepts %v; want TCP %s from the functions' group only", r.props, agentPort)
				}
			}
		}
		if agentRules != 1 {
			t.Errorf("%d ingress rules open the tasks' group, want exactly the agent port's", agentRules)
		}
		var toAgents bool
		for _, r := range raw.ofType(t, "AWS::EC2::SecurityGroupEgress") {
			p := raw.render(t, r.Properties).(map[string]any)
			if p["GroupId"] == fnGroup && p["DestinationSecurityGroupId"] == taskGroup && p["IpProtocol"] == "tcp" &&
				p["FromPort"] == agentPort && p["ToPort"] == agentPort {
				toAgents = true
			}
		}
		if !toAgents {
			t.Errorf("the functions' group may not send to the agent port %s of the tasks' group", agentPort)
		}
		for out, want := range map[string]string{"FunctionSecurityGroupIds": "FunctionSecurityGroup", "SandboxSecurityGroupIds": "SandboxSecurityGroup"} {
			o := raw.Outputs[out]
			if o == nil {
				t.Errorf("no output %s for the main stack's parameter of that name", out)
				continue
			}
			if refs := template.Refs(template.Lookup(o, "Value")); !slices.Equal(refs, []string{want}) {
				t.Errorf("output %s carries %v, want %s alone", out, refs, want)
			}
			if main.Parameters[out] == nil {
				t.Errorf("output %s feeds no parameter of the main stack", out)
			}
		}
		if raw.Outputs["SecurityGroupIds"] != nil {
			t.Error("the network stack still outputs one SecurityGroupIds for functions and tasks")
		}
	}
}
