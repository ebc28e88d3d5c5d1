package broadcaster

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

type grpcServer struct {
	fedsyncv1.UnimplementedBroadcasterServiceServer
	svc         Service
	verifier    *authtoken.Verifier
	connections prometheus.Gauge
}

// NewGRPCServer serves fedsync.v1.BroadcasterService; callers are authenticated
// by the server's token interceptor, and a stream ends with UNAUTHENTICATED
// when its token expires or is revoked (v.Watch). Serve it with
// GRPCServerOptions, so change messages go out as encoded once for all
// subscribers.
func NewGRPCServer(svc Service, v *authtoken.Verifier, connections prometheus.Gauge) fedsyncv1.BroadcasterServiceServer {
	return &grpcServer{svc: svc, verifier: v, connections: connections}
}

// GRPCServerOptions are the server options the broadcaster's gRPC server needs:
// a codec that sends pre-encoded change messages as they are and encodes
// everything else with the standard protobuf codec.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(sharedCodec{encoding.GetCodecV2(protoenc.Name)})}
}

// encodedResponse is a SubscribeResponse in wire form: the subscription's own
// field followed by the change's fields, encoded once for every subscriber
// (protobuf messages concatenate).
type encodedResponse struct {
	head, body []byte
}

// sharedCodec is the protobuf codec, except that it sends an encodedResponse's
// bytes without copying or re-encoding them.
type sharedCodec struct{ encoding.CodecV2 }

func (c sharedCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*encodedResponse); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.head), mem.SliceBuffer(r.body)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func (s *grpcServer) Subscribe(req *fedsyncv1.SubscribeRequest, stream fedsyncv1.BroadcasterService_SubscribeServer) error {
	claims, ok := authtoken.FromContext(stream.Context())
	if !ok {
		return apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
	ctx, cancel := s.verifier.Watch(stream.Context(), claims)
	defer cancel()
	s.connections.Inc()
	defer s.connections.Dec()
	sub, err := s.svc.Subscribe(ctx, SubscribeRequest{
		Filter:     Filter{IDPrefix: req.GetIdPrefix(), DataTypes: req.GetDataTypes(), Reader: claims},
		FromCursor: req.GetFromCursor(), Subscriber: claims.Subject, Events: req.GetEvents(),
	})
	if err != nil {
		return err
	}
	defer s.svc.Unsubscribe(sub.ID)
	// sent is the position of the last change sent: the cursor reported when
	// the subscription ends, so resuming there skips nothing.
	sent := sub.Start
	cursor := req.GetFromCursor()
	if cursor == "" {
		cursor = FormatCursor(sent)
	}
	if err := stream.Send(&fedsyncv1.SubscribeResponse{Type: "subscribed", SubscriptionId: sub.ID, Cursor: cursor}); err != nil {
		return err
	}
	prefix := protoChangePrefix(sub.ID)
	for {
		ev, ok := sub.Next(ctx)
		if !ok {
			if ctx.Err() != nil {
				var authErr *apierr.Error
				if errors.As(context.Cause(ctx), &authErr) {
					return authErr.WithDetail("cursor", FormatCursor(sent))
				}
				return nil
			}
			if err := sub.Err(); err != nil {
				return apierr.New(apierr.Unavailable, "%v (cursor %s)", err, FormatCursor(sent)).WithDetail("cursor", FormatCursor(sent))
			}
			return nil
		}
		if ev.frame != nil {
			end := traceFrame(ev, "grpc", sub.ID)
			err = stream.SendMsg(&encodedResponse{head: prefix, body: ev.frame.proto(sub.Delta)})
			end(err)
		} else {
			err = stream.Send(&fedsyncv1.SubscribeResponse{Type: ev.Type, SubscriptionId: sub.ID})
		}
		if err != nil {
			return err
		}
		if ev.Change != nil {
			sent = ev.Change.GetSeq()
		}
	}
}
