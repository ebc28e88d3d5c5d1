package mtls

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/audit"
)

// Anyone is a policy entry allowing every certificate the federation CA
// issued, services and agents' client certificates alike: the method's own
// token check decides.
const Anyone = "*"

// Policy is the federation's service authorization: for each gRPC method,
// the services (as their certificates name them) that may call it. A method
// it does not list may not be called at all. The public methods, which carry
// an agent's token and check it, are open to every certificate; the internal
// ones to the services whose data flow needs them (docs/architecture.md).
var Policy = map[string][]string{
	// authn: keys and revocations are read by every service; tokens are
	// issued against a client secret.
	"/fedsync.v1.AuthnService/IssueToken":     {Anyone},
	"/fedsync.v1.AuthnService/GetJWKS":        {Anyone},
	"/fedsync.v1.AuthnService/GetRevocations": {Anyone},
	// a follower authn replica hands a registry change to its leader, and
	// asks it how far to catch up before a read.
	"/fedsync.v1.RaftService/Propose":   {"authn"},
	"/fedsync.v1.RaftService/ReadIndex": {"authn"},
	// validation: the agents' write API.
	"/fedsync.v1.ValidationService/PushState": {Anyone},
	"/fedsync.v1.ValidationService/Heartbeat": {Anyone},
	// a validation instance that pauses writes applies it on the others.
	"/fedsync.v1.ValidationService/SyncControl": {"validation"},
	// merge: strong writes come through validation; resolving a conflict is
	// an L3 act checked against the caller's token.
	"/fedsync.v1.MergeService/CommitStrong":    {"validation"},
	"/fedsync.v1.MergeService/ResolveConflict": {Anyone},
	// statestore: only merge commits; the broadcasters read the log;
	// validation keeps the operating state (pause); a follower replica
	// sends each call on to the leader.
	"/fedsync.v1.StateStoreService/Apply":         {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/ApplyBatch":    {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/GetMany":       {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/GetFrontier":   {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/RecordOutcome": {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/GetOutcome":    {"merge", "validation", "statestore"},
	"/fedsync.v1.StateStoreService/ListConflicts": {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/GetConflict":   {"merge", "statestore"},
	"/fedsync.v1.StateStoreService/ReadLog":       {"broadcaster", "merge", "healthmonitor", "statestore"},
	"/fedsync.v1.StateStoreService/GetDigests":    {"broadcaster", "statestore"},
	"/fedsync.v1.StateStoreService/GetControl":    {"validation", "merge", "statestore"},
	"/fedsync.v1.StateStoreService/SetControl":    {"validation", "statestore"},
	// Backups: the admin API of a replica sends them on to the leader only.
	"/fedsync.v1.StateStoreService/CreateBackup":  {"statestore"},
	"/fedsync.v1.StateStoreService/ListBackups":   {"statestore"},
	"/fedsync.v1.StateStoreService/VerifyBackup":  {"statestore"},
	"/fedsync.v1.StateStoreService/RestoreBackup": {"statestore"},
	"/fedsync.v1.StateStoreService/Get":           {Anyone},
	"/fedsync.v1.StateStoreService/Query":         {Anyone},
	// the agents' subscriptions and the health API.
	"/fedsync.v1.BroadcasterService/Subscribe":   {Anyone},
	"/fedsync.v1.HealthMonitorService/GetHealth": {Anyone},
	"/grpc.health.v1.Health/Check":               {Anyone},
	"/grpc.health.v1.Health/Watch":               {Anyone},
	"/grpc.health.v1.Health/List":                {Anyone},
}

// Allowed reports whether service may call method under policy.
func Allowed(policy map[string][]string, method, service string) bool {
	for _, s := range policy[method] {
		if s == Anyone || s == service {
			return true
		}
	}
	return false
}

// CallerService is the service named by the certificate of ctx's peer, or ""
// on a connection without a verified client certificate.
func CallerService(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	return ServiceOf(info.State.PeerCertificates[0])
}

// Authorize returns interceptors that refuse, with permission_denied, a call
// whose caller's certificate names a service policy does not allow for the
// method. The refusal names the caller as the audit actor
// ("service:<name>"), so the audit log records who tried.
func Authorize(policy map[string][]string) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	check := func(ctx context.Context, method string) error {
		svc := CallerService(ctx)
		if Allowed(policy, method, svc) {
			return nil
		}
		audit.SetActor(ctx, "service:"+orUnknown(svc))
		return apierr.New(apierr.PermissionDenied, "Service %q may not call %s.", orUnknown(svc), method).
			WithDetail("method", method).WithDetail("caller", svc)
	}
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
	return unary, stream
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
