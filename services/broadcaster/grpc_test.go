package broadcaster

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/authtoken/authtokentest"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// TestGRPCSubscribeFullAndDelta runs BroadcasterService.Subscribe with the
// server options of the service (the shared-frame codec): both forms, the
// subscription_id spliced in front of the shared bytes, resume, and the
// invalid_argument answer to an unknown events value.
func TestGRPCSubscribeFullAndDelta(t *testing.T) {
	lg := &memLog{}
	svc := NewService(lg, Options{})
	iss := authtokentest.New(t)
	client := grpcClient(t, svc, iss)
	ctx, cancel := context.WithTimeout(authtoken.WithToken(context.Background(), iss.Token(t, "coordinator", "L3")), 10*time.Second)
	defer cancel()

	open := func(req *fedsyncv1.SubscribeRequest) (fedsyncv1.BroadcasterService_SubscribeClient, string) {
		t.Helper()
		stream, err := client.Subscribe(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil || m.GetType() != "subscribed" || m.GetSubscriptionId() == "" {
			t.Fatalf("subscribe %v: %v %v", req, m, err)
		}
		return stream, m.GetSubscriptionId()
	}
	full, fullID := open(&fedsyncv1.SubscribeRequest{IdPrefix: "ai-001:"})
	delta, deltaID := open(&fedsyncv1.SubscribeRequest{IdPrefix: "ai-001:", Events: "delta"})
	_, c1 := lg.commit(t, "ai-001:doc", `{"a":1,"b":2}`, nil, false)
	_, c2 := lg.commit(t, "ai-001:doc", `{"c":3}`, []string{"a"}, true)
	svc.PublishBatch(ctx, []*fedsyncv1.Change{c1, c2})

	check := func(stream fedsyncv1.BroadcasterService_SubscribeClient, id string, delta bool, version int64, want string, removed []string) {
		t.Helper()
		m, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetType() != "change" || m.GetSubscriptionId() != id || m.GetId() != "ai-001:doc" || m.GetVersion() != version ||
			m.GetDataType() != "note" || m.GetUpdatedBy() != "ai-001" || m.GetCursor() != FormatCursor(uint64(version)) {
			t.Fatalf("change %d: %v", version, m)
		}
		got := string(m.GetValue())
		if delta {
			got = string(m.GetSet())
			if len(m.GetValue()) != 0 || strings.Join(m.GetRemoved(), ",") != strings.Join(removed, ",") {
				t.Fatalf("delta change %d: %v", version, m)
			}
		} else if len(m.GetSet()) != 0 || len(m.GetRemoved()) != 0 {
			t.Fatalf("full change %d carries a delta: %v", version, m)
		}
		if !jsonEqual(t, got, want) {
			t.Fatalf("change %d: %s, want %s", version, got, want)
		}
	}
	check(full, fullID, false, 1, `{"a":1,"b":2}`, nil)
	check(full, fullID, false, 2, `{"b":2,"c":3}`, nil)
	check(delta, deltaID, true, 1, `{"a":1,"b":2}`, nil)
	check(delta, deltaID, true, 2, `{"c":3}`, []string{"a"})

	resumed, resumedID := open(&fedsyncv1.SubscribeRequest{IdPrefix: "ai-001:", Events: "delta", FromCursor: "1"})
	check(resumed, resumedID, true, 2, `{"c":3}`, []string{"a"})

	bad, err := client.Subscribe(ctx, &fedsyncv1.SubscribeRequest{Events: "everything"})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "events") {
		t.Fatalf("events everything: %v", err)
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
