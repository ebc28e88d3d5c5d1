package broadcaster

import (
	"encoding/json"
	"time"

	"github.com/fedsync/fedsync/libs/apierr"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// The JSON messages of the WebSocket protocol and webhooks (contract:
// Subscriptions).

// clientMessage is what a WebSocket client sends.
type clientMessage struct {
	Type           string   `json:"type"`
	IDPrefix       string   `json:"id_prefix"`
	DataTypes      []string `json:"data_types"`
	FromCursor     string   `json:"from_cursor"`
	SubscriptionID string   `json:"subscription_id"`
}

type subscribedMessage struct {
	Type           string `json:"type"`
	SubscriptionID string `json:"subscription_id"`
	Cursor         string `json:"cursor"`
}

type changeMessage struct {
	Type           string          `json:"type"`
	SubscriptionID string          `json:"subscription_id,omitempty"`
	ID             string          `json:"id"`
	DataType       string          `json:"data_type"`
	Version        int64           `json:"version"`
	Value          json.RawMessage `json:"value"`
	UpdatedBy      string          `json:"updated_by"`
	UpdatedAt      string          `json:"updated_at"`
	Cursor         string          `json:"cursor"`
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
}

func newChangeMessage(subID string, c *fedsyncv1.Change) changeMessage {
	st := c.GetState()
	value := json.RawMessage(st.GetValue())
	if len(value) == 0 {
		value = json.RawMessage("{}")
	}
	return changeMessage{
		Type: "change", SubscriptionID: subID, ID: st.GetId(), DataType: st.GetDataType(), Version: st.GetVersion(),
		Value: value, UpdatedBy: st.GetUpdatedBy(), UpdatedAt: time.Unix(0, st.GetUpdatedAt()).UTC().Format(time.RFC3339Nano),
		Cursor: FormatCursor(c.GetSeq()),
	}
}

// eventMessage renders an event as its JSON message.
func eventMessage(subID string, ev Event) any {
	if ev.Type == "change" {
		return newChangeMessage(subID, ev.Change)
	}
	return noticeMessage{Type: ev.Type, SubscriptionID: subID}
}

func newErrorMessage(err error, cursor string) errorMessage {
	e := apierr.As(err)
	return errorMessage{Type: "error", Error: errorDetail{Code: e.Code, Message: e.Message, Cursor: cursor}}
}
