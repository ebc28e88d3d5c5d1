package broadcaster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedsync/fedsync/libs/authtoken"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// TestRevocationClosesOpenStreams: a client disabled while its WebSocket and
// gRPC streams are open loses both at the next revocation refresh, with the
// reason; another client's streams stay open.
func TestRevocationClosesOpenStreams(t *testing.T) {
	lg := &memLog{}
	ts := newTestStreamWith(t, lg, limits(64), func(o *HTTPOptions) { o.PingInterval = time.Minute })
	svc, iss := ts.svc, ts.iss
	var disabled map[string]int64
	iss.Verifier.Revocations = func(context.Context) (map[string]int64, map[string]int64, error) {
		return disabled, nil, nil
	}
	client := grpcClient(t, svc, iss)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	openWS := func(subject string) *websocket.Conn {
		conn, _, err := websocket.Dial(ctx, ts.wsURL(t, subject, "L2"), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		wsjson.Write(ctx, conn, map[string]any{"type": "subscribe", "id_prefix": "shared-"})
		var msg map[string]any
		if err := wsjson.Read(ctx, conn, &msg); err != nil || msg["type"] != "subscribed" {
			t.Fatalf("subscribe: %v %v", msg, err)
		}
		return conn
	}
	openGRPC := func(subject string) fedsyncv1.BroadcasterService_SubscribeClient {
		sctx := authtoken.WithToken(ctx, iss.Token(t, subject, "L2"))
		stream, err := client.Subscribe(sctx, &fedsyncv1.SubscribeRequest{IdPrefix: "shared-"})
		if err != nil {
			t.Fatal(err)
		}
		if m, err := stream.Recv(); err != nil || m.GetType() != "subscribed" {
			t.Fatalf("subscribe: %v %v", m, err)
		}
		return stream
	}
	badWS, goodWS := openWS("ai-007"), openWS("ai-008")
	badGRPC, goodGRPC := openGRPC("ai-007"), openGRPC("ai-008")

	disabled = map[string]int64{"ai-007": time.Now().Add(time.Minute).Unix()}
	if err := iss.Verifier.RefreshRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	var msg map[string]any
	err := wsjson.Read(ctx, badWS, &msg)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "disabled") {
		t.Fatalf("disabled client's websocket: read %v %v, want close 1008 naming the reason", msg, err)
	}
	_, err = badGRPC.Recv()
	if st, _ := status.FromError(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "disabled") {
		t.Fatalf("disabled client's gRPC stream ended with %v, want UNAUTHENTICATED naming the reason", err)
	}

	// The other client still receives.
	svc.Publish(ctx, lg.add("shared-x", 1))
	if err := wsjson.Read(ctx, goodWS, &msg); err != nil || msg["type"] != "change" {
		t.Fatalf("other client's websocket: %v %v", msg, err)
	}
	if m, err := goodGRPC.Recv(); err != nil || m.GetType() != "change" {
		t.Fatalf("other client's gRPC stream: %v %v", m, err)
	}
}
