package connect

import (
	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/notice"
)

// Event is what the Connect function receives: API Gateway's $connect event, or a
// notice (then only Notice is set).
type Event struct {
	events.APIGatewayWebsocketProxyRequest
	notice.Envelope
}
