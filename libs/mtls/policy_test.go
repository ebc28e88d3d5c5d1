package mtls

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// TestAuthorizePerMethod runs a statestore-shaped server behind Authorize over
// real mutual TLS: a broadcaster certificate may read the log but not commit
// or set the operating state; merge may commit; an agent's client
// certificate reaches only the public, token-checked methods. The handlers
// are unimplemented, so a call that passes the policy ends Unimplemented.
func TestAuthorizePerMethod(t *testing.T) {
	ca, err := OpenDevCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := Authorize(Policy)
	s := grpc.NewServer(grpc.Creds(identity(t, ca, "statestore").ServerCredentials()), grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	fedsyncv1.RegisterStateStoreServiceServer(s, fedsyncv1.UnimplementedStateStoreServiceServer{})
	fedsyncv1.RegisterMergeServiceServer(s, fedsyncv1.UnimplementedMergeServiceServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	defer s.Stop()
	client := func(service string) (fedsyncv1.StateStoreServiceClient, fedsyncv1.MergeServiceClient) {
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(identity(t, ca, service).ClientCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return fedsyncv1.NewStateStoreServiceClient(cc), fedsyncv1.NewMergeServiceClient(cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bcast, _ := client("broadcaster")
	merge, _ := client("merge")
	agentStore, agentMerge := client("agent-ai-001")
	_, validationMerge := client("validation")
	for _, c := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"broadcaster Apply", func() error { _, err := bcast.Apply(ctx, &fedsyncv1.ApplyRequest{}); return err }, codes.PermissionDenied},
		{"broadcaster SetControl", func() error { _, err := bcast.SetControl(ctx, &fedsyncv1.SetControlRequest{}); return err }, codes.PermissionDenied},
		{"broadcaster ReadLog", func() error { _, err := bcast.ReadLog(ctx, &fedsyncv1.ReadLogRequest{}); return err }, codes.Unimplemented},
		{"merge Apply", func() error { _, err := merge.Apply(ctx, &fedsyncv1.ApplyRequest{}); return err }, codes.Unimplemented},
		{"merge ApplyBatch", func() error { _, err := merge.ApplyBatch(ctx, &fedsyncv1.ApplyBatchRequest{}); return err }, codes.Unimplemented},
		{"agent ApplyBatch", func() error { _, err := agentStore.ApplyBatch(ctx, &fedsyncv1.ApplyBatchRequest{}); return err }, codes.PermissionDenied},
		{"agent Get", func() error { _, err := agentStore.Get(ctx, &fedsyncv1.GetRequest{}); return err }, codes.Unimplemented},
		{"agent CommitStrong", func() error { _, err := agentMerge.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{}); return err }, codes.PermissionDenied},
		{"agent ResolveConflict", func() error {
			_, err := agentMerge.ResolveConflict(ctx, &fedsyncv1.ResolveConflictRequest{})
			return err
		}, codes.Unimplemented},
		{"validation CommitStrong", func() error {
			_, err := validationMerge.CommitStrong(ctx, &fedsyncv1.CommitStrongRequest{})
			return err
		}, codes.Unimplemented},
	} {
		if got := status.Code(c.call()); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// TestPolicyCoversEveryMethod: every method the services serve has an entry,
// so none is refused to everyone by omission.
func TestPolicyCoversEveryMethod(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{fedsyncv1.AuthnService_ServiceDesc, fedsyncv1.ValidationService_ServiceDesc, fedsyncv1.MergeService_ServiceDesc,
		fedsyncv1.StateStoreService_ServiceDesc, fedsyncv1.BroadcasterService_ServiceDesc, fedsyncv1.HealthMonitorService_ServiceDesc} {
		for _, m := range sd.Methods {
			if _, ok := Policy["/"+sd.ServiceName+"/"+m.MethodName]; !ok {
				t.Errorf("no policy for /%s/%s", sd.ServiceName, m.MethodName)
			}
		}
		for _, m := range sd.Streams {
			if _, ok := Policy["/"+sd.ServiceName+"/"+m.StreamName]; !ok {
				t.Errorf("no policy for /%s/%s", sd.ServiceName, m.StreamName)
			}
		}
	}
}
