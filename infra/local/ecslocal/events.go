package ecslocal

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/sandgate/sandgate/internal/logging"
)

// ECS task state change events, as ECS sends them to EventBridge
// (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs_task_events.html):
// one per change of a task's last or desired status (its creation included), in
// EventBridge's envelope (version "0", a fresh id, the account, the region, the task's
// ARN as the one resource, the time to the second), with the task as DescribeTasks
// describes it as the detail, except that its timestamps are ISO 8601 strings, an
// updatedAt is added, and it carries no tags (ECS does not put them in events). The
// detail's version is the task's, so a redelivered event repeats it.
const (
	EventSource     = "aws.ecs"
	EventDetailType = "ECS Task State Change"
)

// eventTimes are the detail's members DescribeTasks writes as epoch seconds and an
// event as ISO 8601 strings.
var eventTimes = []string{"connectivityAt", "createdAt", "executionStoppedAt", "pullStartedAt",
	"pullStoppedAt", "startedAt", "stoppedAt", "stoppingAt"}

// eventQueue holds the events not yet handed to Server.Events, in the order of the
// changes, and whether a goroutine is handing them over. Guarded by Server.mu.
type eventQueue struct {
	pending [][]byte
	sending bool
}

// emitLocked queues the event of t's state as it is now. The sink is called outside
// the lock, one event at a time, in order, by a goroutine that lives while there is
// something to send: a slow sink delays events, never the tasks.
func (s *Server) emitLocked(t *task) {
	if s.Events == nil {
		return
	}
	b, err := s.eventLocked(t, time.Now())
	if err != nil {
		s.log.Warn("task state change event not emitted", logging.TaskARN, t.arn, logging.Error, err.Error())
		return
	}
	s.events.pending = append(s.events.pending, b)
	if !s.events.sending {
		s.events.sending = true
		go s.sendEvents()
	}
}

func (s *Server) sendEvents() {
	for {
		s.mu.Lock()
		if len(s.events.pending) == 0 {
			s.events.sending = false
			s.mu.Unlock()
			return
		}
		b := s.events.pending[0]
		s.events.pending = s.events.pending[1:]
		s.mu.Unlock()
		s.Events(b)
	}
}

// eventLocked renders t's task state change event at now.
func (s *Server) eventLocked(t *task, now time.Time) ([]byte, error) {
	raw, err := json.Marshal(s.wireLocked(t, false))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var detail map[string]any
	if err := dec.Decode(&detail); err != nil {
		return nil, err
	}
	for _, k := range eventTimes {
		if n, ok := detail[k].(json.Number); ok {
			secs, err := strconv.ParseFloat(string(n), 64)
			if err != nil {
				return nil, err
			}
			detail[k] = isoTime(time.UnixMilli(int64(secs*1000 + 0.5)))
		}
	}
	detail["updatedAt"] = isoTime(now)
	d, err := json.Marshal(detail)
	if err != nil {
		return nil, err
	}
	return json.Marshal(events.CloudWatchEvent{
		Version: "0", ID: newUUID(), DetailType: EventDetailType, Source: EventSource,
		AccountID: s.account, Time: now.UTC().Truncate(time.Second), Region: s.region,
		Resources: []string{t.arn}, Detail: d,
	})
}

// isoTime is an event's timestamp: UTC, milliseconds.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
