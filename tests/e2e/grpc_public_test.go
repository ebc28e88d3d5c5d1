package e2e

import (
	"context"
	"encoding/base64"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// grpcurlBinary builds grpcurl, pinned as a Go tool in tools/protogen.
func grpcurlBinary(t *testing.T) string {
	t.Helper()
	out := filepath.Join(binDir, "grpcurl")
	cmd := exec.Command("go", "build", "-o", out, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = filepath.Join(repoRoot, "tools", "protogen")
	cmd.Env = append(cmd.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build grpcurl: %v\n%s", err, b)
	}
	return out
}

// TestPublicGRPCForAgents: the hub's public gRPC endpoint serves an agent
// that has only a token (no client certificate): grpcurl lists the services
// through server reflection, checks grpc.health.v1, and pushes a delta; a
// push without a token is refused; and seed 2.1's bidirectional AgentService.Sync
// stream carries a push and the resulting change on one stream.
func TestPublicGRPCForAgents(t *testing.T) {
	grpcurl := grpcurlBinary(t)
	s := startStack(t)
	addr := s.PublicGRPCAddr("na")
	agent := newAgent(t, s, "ai-007", "na")
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, grpcurl, append([]string{"-plaintext"}, args...)...).CombinedOutput()
		return string(b), err
	}
	out, err := run(addr, "list")
	if err != nil {
		t.Fatalf("grpcurl list: %v\n%s", err, out)
	}
	for _, svc := range []string{"fedsync.v1.AgentService", "fedsync.v1.BroadcasterService", "fedsync.v1.ValidationService", "grpc.health.v1.Health"} {
		if !strings.Contains(out, svc) {
			t.Errorf("reflection does not list %s:\n%s", svc, out)
		}
	}
	if out, err := run(addr, "grpc.health.v1.Health/Check"); err != nil || !strings.Contains(out, "SERVING") {
		t.Fatalf("health: %v\n%s", err, out)
	}
	patch := base64.StdEncoding.EncodeToString([]byte(`{"via":"grpcurl"}`))
	body := `{"id":"ai-007:grpcurl","data_type":"note","patch":"` + patch + `","message_id":"grpcurl-1"}`
	if out, err := run("-d", body, addr, "fedsync.v1.ValidationService/PushState"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Fatalf("a push without a token: %v\n%s", err, out)
	}
	out, err = run("-H", "authorization: Bearer "+agent.token, "-d", body, addr, "fedsync.v1.ValidationService/PushState")
	if err != nil || !strings.Contains(out, `"accepted"`) {
		t.Fatalf("grpcurl push: %v\n%s", err, out)
	}
	agent.waitVersion("ai-007:grpcurl", 1, 20*time.Second)

	// The bidirectional stream: subscribe, push, receive the answer and the change.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+agent.token)
	stream, err := fedsyncv1.NewAgentServiceClient(cc).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sub, _ := proto.Marshal(&fedsyncv1.SubscribeRequest{IdPrefix: "ai-007:bidi"})
	if err := stream.Send(&fedsyncv1.SyncMessage{MessageId: "q1", Type: fedsyncv1.MessageType_QUERY, Payload: sub}); err != nil {
		t.Fatal(err)
	}
	recv := func() *fedsyncv1.SyncMessage {
		t.Helper()
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		return m
	}
	first := &fedsyncv1.SubscribeResponse{}
	if m := recv(); m.GetType() != fedsyncv1.MessageType_EVENT || proto.Unmarshal(m.GetPayload(), first) != nil || first.GetType() != "subscribed" {
		t.Fatalf("first message %v (%v)", m, first)
	}
	push, _ := proto.Marshal(&fedsyncv1.PushStateRequest{Id: "ai-007:bidi", DataType: "note", Patch: []byte(`{"via":"sync"}`)})
	if err := stream.Send(&fedsyncv1.SyncMessage{MessageId: "bidi-1", Type: fedsyncv1.MessageType_STATE_UPDATE, Payload: push}); err != nil {
		t.Fatal(err)
	}
	bad, _ := proto.Marshal(&fedsyncv1.PushStateRequest{Id: "ai-008:not-mine", DataType: "note", Patch: []byte(`{}`)})
	if err := stream.Send(&fedsyncv1.SyncMessage{MessageId: "bidi-2", Type: fedsyncv1.MessageType_STATE_UPDATE, Payload: bad}); err != nil {
		t.Fatal(err)
	}
	var accepted, refused, changed bool
	for !(accepted && refused && changed) {
		m := recv()
		switch {
		case m.GetType() == fedsyncv1.MessageType_RESPONSE && m.GetMessageId() == "bidi-1":
			r := &fedsyncv1.PushStateResponse{}
			if proto.Unmarshal(m.GetPayload(), r) != nil || r.GetStatus() != "accepted" {
				t.Fatalf("push answered %v (%v)", m, r)
			}
			accepted = true
		case m.GetType() == fedsyncv1.MessageType_RESPONSE && m.GetMessageId() == "bidi-2":
			if m.GetMetadata()["error_code"] != "permission_denied" {
				t.Fatalf("a push to another agent's document answered %v", m)
			}
			refused = true
		case m.GetType() == fedsyncv1.MessageType_EVENT:
			ch := &fedsyncv1.SubscribeResponse{}
			if proto.Unmarshal(m.GetPayload(), ch) != nil || ch.GetType() != "change" || ch.GetId() != "ai-007:bidi" || ch.GetVersion() != 1 {
				t.Fatalf("event %v", ch)
			}
			changed = true
		}
	}
	stream.CloseSend()
}
