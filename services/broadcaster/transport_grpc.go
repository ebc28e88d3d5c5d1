package broadcaster

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

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
// by the server's token interceptor.
func NewGRPCServer(svc Service, connections prometheus.Gauge) fedsyncv1.BroadcasterServiceServer {
	return &grpcServer{svc: svc, connections: connections}
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
		Filter: Filter{IDPrefix: req.GetIdPrefix(), DataTypes: req.GetDataTypes(), Reader: claims}, FromCursor: req.GetFromCursor(), Subscriber: claims.Subject,
	})
	if err != nil {
		return err
	}
	cursor := req.GetFromCursor()
	if cursor == "" {
		cursor = FormatCursor(sub.Cursor())
	}
	if err := stream.Send(&fedsyncv1.SubscribeResponse{Type: "subscribed", SubscriptionId: sub.ID, Cursor: cursor}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Done():
			if err := sub.Err(); err != nil {
				return apierr.New(apierr.Unavailable, "%v (cursor %s)", err, FormatCursor(sub.Cursor()))
			}
			return nil
		case ev := <-sub.Events():
			msg := &fedsyncv1.SubscribeResponse{Type: ev.Type, SubscriptionId: sub.ID}
			if ev.Change != nil {
				m := newChangeMessage(sub.ID, ev.Change)
				msg.Id, msg.DataType, msg.Version, msg.UpdatedBy, msg.Cursor = m.ID, m.DataType, m.Version, m.UpdatedBy, m.Cursor
				msg.Value = json.RawMessage(m.Value)
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
	}
}
