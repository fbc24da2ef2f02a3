package templatecheck_test

import (
	"strings"
	"testing"

	"github.com/sandgate/sandgate/infra/local/template"
	"github.com/sandgate/sandgate/infra/undeploy"
)

// make undeploy refuses new sandboxes by throttling undeploy.StartFunctions: they must
// be exactly the functions whose roles may start a task (ecs:RunTask), in every
// scenario, or a start could slip past the hold while the sandboxes are being stopped.
func TestUndeploy_StartFunctionsAreThoseThatRunTasks(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			raw := loadRaw(t, templatePath, sc)
			starters := set()
			for _, fn := range raw.ofType(t, "AWS::Serverless::Function") {
				roles := template.Refs(template.Lookup(fn.Properties, "Role"))
				if len(roles) != 1 || raw.Resources[roles[0]] == nil {
					t.Errorf("%s: role %v is not one of the template's", fn.LogicalID, roles)
					continue
				}
				got, _ := grants(t, raw, raw.Resources[roles[0]])
				for g := range got {
					if strings.HasPrefix(g, "ecs:RunTask ") {
						starters[fn.LogicalID] = true
					}
				}
			}
			if missing, extra := diff(starters, set(undeploy.StartFunctions...)); len(missing)+len(extra) > 0 {
				t.Errorf("undeploy.StartFunctions: missing %v (their roles may run tasks), not starters %v", missing, extra)
			}
			if raw.Resources[undeploy.ClusterResource] == nil {
				t.Errorf("no %s: undeploy stops the sandboxes of that cluster", undeploy.ClusterResource)
			}
		})
	}
}
