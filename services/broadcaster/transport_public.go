package broadcaster

import (
	"context"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/discovery"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// The agents' public gRPC endpoint (-public-grpc-addr): what an agent can
// reach with only a bearer token, apart from the services' mutual-TLS port.
// Plaintext (make run) or server-authenticated TLS (-public-tls.cert and
// -public-tls.key). It serves:
//   - fedsync.v1.BroadcasterService/Subscribe, as on the internal port;
//   - fedsync.v1.ValidationService/PushState and Heartbeat, forwarded to
//     validation with the agent's token (validation checks it);
//   - fedsync.v1.AgentService/Sync, seed 2.1's bidirectional stream;
//   - grpc.health.v1 and server reflection (grpcurl works without .proto
//     files), which need no token.

// Pusher forwards writes to validation.
type Pusher interface {
	PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error)
	Heartbeat(ctx context.Context, req *fedsyncv1.HeartbeatRequest) (*fedsyncv1.HeartbeatResponse, error)
}

// validationClient forwards to validation over the mesh, with the agent's
// token in the outgoing metadata.
type validationClient struct{ peer *discovery.Peer }

func forwardToken(ctx context.Context) context.Context {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if a := md.Get("authorization"); len(a) > 0 {
			return metadata.AppendToOutgoingContext(ctx, "authorization", a[0])
		}
	}
	return ctx
}

func (c validationClient) PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error) {
	return discovery.Invoke(forwardToken(ctx), c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.PushStateResponse, error) {
		return fedsyncv1.NewValidationServiceClient(cc).PushState(ctx, req)
	})
}

func (c validationClient) Heartbeat(ctx context.Context, req *fedsyncv1.HeartbeatRequest) (*fedsyncv1.HeartbeatResponse, error) {
	return discovery.Invoke(forwardToken(ctx), c.peer, func(ctx context.Context, cc grpc.ClientConnInterface) (*fedsyncv1.HeartbeatResponse, error) {
		return fedsyncv1.NewValidationServiceClient(cc).Heartbeat(ctx, req)
	})
}

// publicOpen are the methods the public port serves without a token.
func publicOpen(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.Health/") || strings.HasPrefix(method, "/grpc.reflection.")
}

// NewPublicGRPCServer returns the agents' gRPC server; creds nil serves
// plaintext.
func NewPublicGRPCServer(svc Service, v *authtoken.Verifier, push Pusher, connections prometheus.Gauge, creds credentials.TransportCredentials, extra ...grpc.ServerOption) *grpc.Server {
	unary, stream := v.UnaryServerInterceptor(), v.StreamServerInterceptor()
	opts := append(GRPCServerOptions(), extra...)
	opts = append(opts,
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if publicOpen(info.FullMethod) {
				return h(ctx, req)
			}
			return unary(ctx, req, info, h)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if publicOpen(info.FullMethod) {
				return h(srv, ss)
			}
			return stream(srv, ss, info, h)
		}))
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	s := grpc.NewServer(opts...)
	fedsyncv1.RegisterBroadcasterServiceServer(s, NewGRPCServer(svc, v, connections))
	fedsyncv1.RegisterValidationServiceServer(s, publicValidation{push: push})
	fedsyncv1.RegisterAgentServiceServer(s, &agentServer{svc: svc, verifier: v, push: push, connections: connections})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	reflection.Register(s)
	return s
}

// publicValidation is ValidationService on the public port: writes and
// heartbeats, forwarded.
type publicValidation struct {
	fedsyncv1.UnimplementedValidationServiceServer
	push Pusher
}

func (p publicValidation) PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error) {
	return p.push.PushState(ctx, req)
}

func (p publicValidation) Heartbeat(ctx context.Context, req *fedsyncv1.HeartbeatRequest) (*fedsyncv1.HeartbeatResponse, error) {
	return p.push.Heartbeat(ctx, req)
}

type agentServer struct {
	fedsyncv1.UnimplementedAgentServiceServer
	svc         Service
	verifier    *authtoken.Verifier
	push        Pusher
	connections prometheus.Gauge
}

// Sync serves one agent's bidirectional stream until it or its token ends.
func (a *agentServer) Sync(stream fedsyncv1.AgentService_SyncServer) error {
	claims, ok := authtoken.FromContext(stream.Context())
	if !ok {
		return apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
	ctx, cancel := a.verifier.Watch(stream.Context(), claims)
	defer cancel()
	a.connections.Inc()
	defer a.connections.Dec()
	var sendMu sync.Mutex
	send := func(m *fedsyncv1.SyncMessage) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	reply := func(in *fedsyncv1.SyncMessage, payload proto.Message, err error) error {
		out := &fedsyncv1.SyncMessage{MessageId: in.GetMessageId(), Type: fedsyncv1.MessageType_RESPONSE}
		if err != nil {
			e := apierr.As(err)
			out.Metadata = map[string]string{"error_code": string(e.Code), "error_message": e.Message}
		} else if payload != nil {
			out.Payload, _ = proto.Marshal(payload)
		}
		return send(out)
	}
	subscribed := false
	errc := make(chan error, 1)
	for {
		in, err := stream.Recv()
		if err != nil {
			select {
			case serr := <-errc:
				return serr
			default:
			}
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return nil // the agent closed its side
		}
		switch in.GetType() {
		case fedsyncv1.MessageType_STATE_UPDATE:
			req := &fedsyncv1.PushStateRequest{}
			if err := proto.Unmarshal(in.GetPayload(), req); err != nil {
				err = apierr.New(apierr.InvalidArgument, "Field payload of a STATE_UPDATE must be a PushStateRequest: %v.", err)
				if err := reply(in, nil, err); err != nil {
					return err
				}
				continue
			}
			if req.GetMessageId() == "" {
				req.MessageId = in.GetMessageId()
			}
			resp, err := a.push.PushState(ctx, req)
			if err := reply(in, resp, err); err != nil {
				return err
			}
		case fedsyncv1.MessageType_HEARTBEAT:
			_, err := a.push.Heartbeat(ctx, &fedsyncv1.HeartbeatRequest{})
			if err := reply(in, nil, err); err != nil {
				return err
			}
		case fedsyncv1.MessageType_QUERY:
			req := &fedsyncv1.SubscribeRequest{}
			var err error
			switch {
			case subscribed:
				err = apierr.New(apierr.InvalidArgument, "This stream already has its subscription; open another stream for another.")
			case proto.Unmarshal(in.GetPayload(), req) != nil:
				err = apierr.New(apierr.InvalidArgument, "Field payload of a QUERY must be a SubscribeRequest.")
			}
			if err != nil {
				if err := reply(in, nil, err); err != nil {
					return err
				}
				continue
			}
			sub, err := a.svc.Subscribe(ctx, SubscribeRequest{
				Filter:     Filter{IDPrefix: req.GetIdPrefix(), DataTypes: req.GetDataTypes(), Reader: claims},
				FromCursor: req.GetFromCursor(), Subscriber: claims.Subject, Events: req.GetEvents(),
			})
			if err != nil {
				if err := reply(in, nil, err); err != nil {
					return err
				}
				continue
			}
			subscribed = true
			go func() {
				defer a.svc.Unsubscribe(sub.ID)
				if err := a.events(ctx, sub, req.GetFromCursor(), send); err != nil {
					errc <- err
					cancel()
				}
			}()
		default:
			err := apierr.New(apierr.InvalidArgument, "Field type %s is not one an agent sends (STATE_UPDATE, HEARTBEAT, QUERY).", in.GetType())
			if err := reply(in, nil, err); err != nil {
				return err
			}
		}
	}
}

// events sends the subscription's events as EVENT messages whose payload is
// the SubscribeResponse the Subscribe RPC would send.
func (a *agentServer) events(ctx context.Context, sub *Subscription, from string, send func(*fedsyncv1.SyncMessage) error) error {
	sent := sub.Start
	cursor := from
	if cursor == "" {
		cursor = FormatCursor(sent)
	}
	first, _ := proto.Marshal(&fedsyncv1.SubscribeResponse{Type: "subscribed", SubscriptionId: sub.ID, Cursor: cursor})
	if err := send(&fedsyncv1.SyncMessage{Type: fedsyncv1.MessageType_EVENT, Payload: first}); err != nil {
		return err
	}
	prefix := protoChangePrefix(sub.ID)
	for {
		ev, ok := sub.Next(ctx)
		if !ok {
			if err := sub.Err(); err != nil && ctx.Err() == nil {
				return apierr.New(apierr.Unavailable, "%v (cursor %s)", err, FormatCursor(sent)).WithDetail("cursor", FormatCursor(sent))
			}
			return nil
		}
		var payload []byte
		end := func(error) {}
		if ev.frame != nil {
			end = traceFrame(ev, "grpc", sub.ID)
			payload = append(append([]byte(nil), prefix...), ev.frame.proto(sub.Delta)...)
		} else {
			payload, _ = proto.Marshal(&fedsyncv1.SubscribeResponse{Type: ev.Type, SubscriptionId: sub.ID})
		}
		m := &fedsyncv1.SyncMessage{Type: fedsyncv1.MessageType_EVENT, Payload: payload}
		if ev.Change != nil {
			m.MessageId = ev.Change.GetMessageId()
			m.Timestamp = ev.Change.GetState().GetUpdatedAt()
		}
		err := send(m)
		end(err)
		if err != nil {
			return err
		}
		if ev.Change != nil {
			sent = ev.Change.GetSeq()
		}
	}
}
