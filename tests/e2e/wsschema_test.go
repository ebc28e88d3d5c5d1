package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestWebSocketMessagesMatchTheirSchemas: the JSON Schemas in docs/schemas
// describe what really crosses /stream: every client message this test
// sends validates against ws-client-message.json, every message the server
// sends (subscribed, whole and delta changes, errors, unsubscribed) against
// ws-server-message.json, and malformed messages do not validate.
func TestWebSocketMessagesMatchTheirSchemas(t *testing.T) {
	compile := func(name string) *jsonschema.Schema {
		c := jsonschema.NewCompiler()
		f, err := os.Open(filepath.Join(repoRoot, "docs", "schemas", name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		doc, err := jsonschema.UnmarshalJSON(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(name, doc); err != nil {
			t.Fatal(err)
		}
		s, err := c.Compile(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return s
	}
	clientSchema, serverSchema := compile("ws-client-message.json"), compile("ws-server-message.json")
	valid := func(s *jsonschema.Schema, raw []byte) error {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
		if err != nil {
			return err
		}
		return s.Validate(v)
	}

	st := startStack(t)
	a := newAgent(t, st, "ai-001", "na")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.edge, "http")+"/stream?access_token="+a.token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	send := func(m map[string]any) {
		raw, _ := json.Marshal(m)
		if err := valid(clientSchema, raw); err != nil {
			t.Errorf("client message %s does not match its schema: %v", raw, err)
		}
		wsjson.Write(ctx, conn, m)
	}
	var got [][]byte
	read := func(n int) {
		for i := 0; i < n; i++ {
			_, raw, err := conn.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, raw)
		}
	}
	send(map[string]any{"type": "subscribe", "id_prefix": "ai-001:schema-"})
	send(map[string]any{"type": "subscribe", "id_prefix": "ai-001:schema-", "events": "delta"})
	read(2)
	a.push(`{"id":"ai-001:schema-x","data_type":"note","patch":{"a":1,"b":"two"}}`)
	a.push(`{"id":"ai-001:schema-x","data_type":"note","patch":{"a":null}}`)
	read(4)
	wsjson.Write(ctx, conn, map[string]any{"type": "bogus"}) // an error answer
	read(1)
	var first map[string]any
	json.Unmarshal(got[0], &first)
	send(map[string]any{"type": "unsubscribe", "subscription_id": first["subscription_id"]})
	read(1)
	kinds := map[string]int{}
	for _, raw := range got {
		var m map[string]any
		json.Unmarshal(raw, &m)
		kind, _ := m["type"].(string)
		if _, ok := m["set"]; ok {
			kind += "/delta"
		}
		kinds[kind]++
		if err := valid(serverSchema, raw); err != nil {
			t.Errorf("server message %s does not match its schema: %v", raw, err)
		}
	}
	if kinds["subscribed"] != 2 || kinds["change"] != 2 || kinds["change/delta"] != 2 || kinds["error"] != 1 || kinds["unsubscribed"] != 1 {
		t.Fatalf("messages seen: %v", kinds)
	}
	// The schemas are not vacuous.
	for _, bad := range []string{`{"type":"subscribe","id_prefx":"x"}`, `{"type":"unsubscribe"}`, `{"type":"nope"}`} {
		if valid(clientSchema, []byte(bad)) == nil {
			t.Errorf("client schema accepts %s", bad)
		}
	}
	for _, bad := range []string{`{"type":"change","id":"x"}`, `{"type":"subscribed"}`, `{"type":"error","error":{"code":"x"}}`} {
		if valid(serverSchema, []byte(bad)) == nil {
			t.Errorf("server schema accepts %s", bad)
		}
	}
}
