package broadcaster

import (
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
	connections prometheus.Gauge
}

// NewGRPCServer serves fedsync.v1.BroadcasterService; callers are authenticated
// by the server's token interceptor. Serve it with GRPCServerOptions, so change
// messages go out as encoded once for all subscribers.
func NewGRPCServer(svc Service, connections prometheus.Gauge) fedsyncv1.BroadcasterServiceServer {
	return &grpcServer{svc: svc, connections: connections}
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
	ctx := stream.Context()
	claims, ok := authtoken.FromContext(ctx)
	if !ok {
		return apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
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
	cursor := req.GetFromCursor()
	if cursor == "" {
		cursor = FormatCursor(sub.Cursor())
	}
	if err := stream.Send(&fedsyncv1.SubscribeResponse{Type: "subscribed", SubscriptionId: sub.ID, Cursor: cursor}); err != nil {
		return err
	}
	prefix := protoChangePrefix(sub.ID)
	for {
		ev, ok := sub.Next(ctx)
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			if err := sub.Err(); err != nil {
				return apierr.New(apierr.Unavailable, "%v (cursor %s)", err, FormatCursor(sub.Cursor()))
			}
			return nil
		}
		if ev.frame != nil {
			err = stream.SendMsg(&encodedResponse{head: prefix, body: ev.frame.proto(sub.Delta)})
		} else {
			err = stream.Send(&fedsyncv1.SubscribeResponse{Type: ev.Type, SubscriptionId: sub.ID})
		}
		if err != nil {
			return err
		}
	}
}
