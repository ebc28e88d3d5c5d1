package broadcaster

import (
	"encoding/json"

	"github.com/fedsync/fedsync/libs/apierr"
)

// The JSON messages of the WebSocket protocol and webhooks (contract:
// Subscriptions). Change messages are not marshalled per subscriber: a frame
// encodes the shared part once and jsonChangePrefix adds the subscription's.

// clientMessage is what a WebSocket client sends.
type clientMessage struct {
	Type           string   `json:"type"`
	IDPrefix       string   `json:"id_prefix"`
	DataTypes      []string `json:"data_types"`
	FromCursor     string   `json:"from_cursor"`
	SubscriptionID string   `json:"subscription_id"`
	Events         string   `json:"events"`
}

type subscribedMessage struct {
	Type           string `json:"type"`
	SubscriptionID string `json:"subscription_id"`
	Cursor         string `json:"cursor"`
}

type noticeMessage struct {
	Type           string `json:"type"`
	SubscriptionID string `json:"subscription_id,omitempty"`
	Cursor         string `json:"cursor,omitempty"`
}

type errorMessage struct {
	Type  string      `json:"type"`
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    apierr.Code `json:"code"`
	Message string      `json:"message"`
	Cursor  string      `json:"cursor,omitempty"`
	// Details are the error's details, as in REST error bodies.
	Details map[string]any `json:"details,omitempty"`
}

// eventJSON renders an event of subscription subID (of the given form) as its
// JSON message. prefix is jsonChangePrefix(subID), computed once per
// subscription; the change's own part is the frame's shared encoding. The two
// parts are returned separately so a transport can write them without copying.
func eventJSON(prefix []byte, subID string, delta bool, ev Event) (head, body []byte) {
	if ev.frame != nil {
		return prefix, ev.frame.json(delta)
	}
	b, _ := json.Marshal(noticeMessage{Type: ev.Type, SubscriptionID: subID})
	return nil, b
}

func newErrorMessage(err error, cursor string) errorMessage {
	e := apierr.As(err)
	return errorMessage{Type: "error", Error: errorDetail{Code: e.Code, Message: e.Message, Cursor: cursor, Details: e.Details}}
}
