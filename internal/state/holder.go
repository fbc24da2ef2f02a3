package state

import (
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// HolderAttributes are the attributes a sandbox's own writes name, in the order
// template.yaml's SandboxRole lists them: the only attributes its scoped session may
// name in an UpdateItem (dynamodb:Attributes). They are every name the agent's writes
// of its record (Heartbeat, MarkReady, RecordSync, MarkStopping, Stop, Abort) and of its inbox
// counter (Ack) carry — the keys, what they set or remove, and what their conditions
// and operands read (the token, the generation, the inbox floor) — so the grant holds
// whichever of them IAM counts.
//
// What is not here a sandbox cannot write, even on its own record: the task the record
// names (taskArn: cleanup's reap and a takeover stop that task), the user the record
// claims (userId), whether its task was warm, a purge's mark and a restart request. So
// whatever a compromised agent writes, the control plane stops only the task it
// recorded itself for the lease, and acts only on the user the record's key names.
var HolderAttributes = []string{
	AttrPK, AttrSK,
	aState, aToken, aDeadline, aGen, aEndpoint, aGateway, aHeartbeat, aActivity, aSince, aReason, aVersion, aSlot,
	aCount, aBytes, aFloor, aLastSync,
}

// recordUser is the user a sandbox record belongs to: the one its key names, which is
// what IAM binds a sandbox's session to. The userId attribute, written with the key, is
// only read for an item that has no such key.
func recordUser(item map[string]types.AttributeValue) string {
	if id, ok := strings.CutPrefix(getS(item, AttrPK), userPrefix); ok && id != "" {
		return id
	}
	return getS(item, aUserID)
}
