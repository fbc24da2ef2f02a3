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

// Response is what the Connect function returns: API Gateway's response to $connect
// (ignored for an asynchronous notice), and, to an ensure notice, the answer beside
// it (then Ensured is set and it is all that matters).
type Response struct {
	events.APIGatewayProxyResponse
	notice.Answer
}
