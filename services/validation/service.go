// Package validation is the regional hub's ingress (seed 3.2 steps 2-3): it
// authenticates writers, checks every delta against the contract, stamps it with
// a hybrid logical clock, and appends it to Kafka's fedsync.deltas, answering 202
// only once every in-sync replica has it. Strong writes are committed through
// merge before they are answered.
package validation

import (
	"context"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/fedsync/fedsync/libs/access"
	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/authtoken"
	"github.com/fedsync/fedsync/libs/datatypes"
	"github.com/fedsync/fedsync/libs/hlc"
	"github.com/fedsync/fedsync/libs/kafkabus"
	"github.com/fedsync/fedsync/libs/statedoc"
	"github.com/fedsync/fedsync/libs/telemetry"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Service is validation's business logic.
type Service interface {
	PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error)
	Heartbeat(ctx context.Context, req *fedsyncv1.HeartbeatRequest) (*fedsyncv1.HeartbeatResponse, error)
	// SetPaused pauses or resumes writes federation-wide (seed 9.2); callers
	// check the L4 level.
	SetPaused(ctx context.Context, req SetPausedRequest) (*PauseResult, error)
	// SyncControl loads the operating state now and returns it once no write
	// admitted under the previous state is in flight (service-internal).
	SyncControl(ctx context.Context, req *fedsyncv1.SyncControlRequest) (*fedsyncv1.SyncControlResponse, error)
	// GetControl returns the federation's operating state.
	GetControl(ctx context.Context, _ struct{}) (*fedsyncv1.ControlState, error)
}

// PauseResult is the new operating state and how far it has reached: the
// validation instances that applied it before the call returned, and those
// that did not answer (they apply it within -control-poll once they reach
// statestore).
type PauseResult struct {
	State       *fedsyncv1.ControlState
	Instances   int
	Unconfirmed []string
}

// SetPausedRequest pauses (Paused true) or resumes writes.
type SetPausedRequest struct {
	Paused bool
	By     string
	Reason string
}

// Log appends records to a Kafka topic and returns once they are acknowledged.
type Log interface {
	Publish(ctx context.Context, records ...kafkabus.Record) error
}

// StrongCommitter commits a strong delta and returns its version.
type StrongCommitter interface {
	CommitStrong(ctx context.Context, d *fedsyncv1.Delta) (int64, error)
}

type service struct {
	control        *control
	types          *datatypes.Watcher
	deltas         Log
	heartbeats     Log
	merge          StrongCommitter
	clock          *hlc.Clock
	region         string
	produceTimeout time.Duration
	strongTimeout  time.Duration
	admission      *admission
	inflight       inflight
	// beats limits heartbeats per agent.
	beats beatLimiter
	// fanout applies a pause on every validation instance (nil: this one
	// only; the others follow within the poll interval).
	fanout func(ctx context.Context) ([]string, map[string]error)
}

// NewService returns validation's logic.
func NewService(types *datatypes.Watcher, deltas, heartbeats Log, merge StrongCommitter, region string, produceTimeout, strongTimeout time.Duration) *service {
	return &service{control: &control{store: &memControl{}}, types: types, deltas: deltas, heartbeats: heartbeats, merge: merge, clock: hlc.New(nil), region: region,
		produceTimeout: produceTimeout, strongTimeout: strongTimeout}
}

var consistencies = map[string]fedsyncv1.Consistency{
	"eventual": fedsyncv1.Consistency_CONSISTENCY_EVENTUAL,
	"causal":   fedsyncv1.Consistency_CONSISTENCY_CAUSAL,
	"strong":   fedsyncv1.Consistency_CONSISTENCY_STRONG,
}

const maxMessageID = 128

// check validates req against the contract and the data-type registry, and
// returns its delta; writer is the authenticated client.
func check(req *fedsyncv1.PushStateRequest, types *datatypes.Registry, writer string) (*fedsyncv1.Delta, error) {
	bad := func(format string, args ...any) error { return apierr.New(apierr.InvalidArgument, format, args...) }
	switch {
	case req.GetId() == "":
		return nil, bad("Field id is required.")
	case !statedoc.ValidID(req.GetId()):
		return nil, bad("Field id %s.", statedoc.IDRule)
	case req.GetDataType() == "":
		return nil, bad("Field data_type is required.")
	case len(req.GetDataType()) > 128:
		return nil, bad("Field data_type is longer than 128 characters.")
	case len(req.GetPatch()) == 0 || string(req.GetPatch()) == "null":
		return nil, bad("Field patch is required.")
	case !utf8.Valid(req.GetPatch()) || !utf8.ValidString(req.GetMessageId()) || !utf8.ValidString(req.GetDataType()):
		// REST bodies are checked whole; gRPC strings are checked by protobuf,
		// but the patch travels as bytes.
		return nil, bad("The request is not valid UTF-8; fedsync refuses it anywhere in a request.")
	case len(req.GetMessageId()) > maxMessageID:
		return nil, bad("Field message_id is longer than %d characters.", maxMessageID)
	case req.GetHasPriority() && (req.GetPriority() < 0 || req.GetPriority() > 9):
		return nil, bad("Field priority must be between 0 and 9.")
	}
	patch, err := statedoc.DecodeObject(req.GetPatch())
	if err != nil {
		return nil, bad("Field patch %v.", err)
	}
	if _, ok := consistencies[req.GetConsistency()]; !ok && req.GetConsistency() != "" {
		return nil, bad("Field consistency must be eventual, causal or strong, not %q.", req.GetConsistency())
	}
	ty, err := types.Type(req.GetDataType())
	if err != nil {
		return nil, err
	}
	modeName, err := ty.Mode(req.GetConsistency())
	if err != nil {
		return nil, err
	}
	mode := consistencies[modeName]
	if err := ty.ValidatePatch(patch); err != nil {
		return nil, err
	}
	if mode == fedsyncv1.Consistency_CONSISTENCY_CAUSAL && req.GetVectorClock()[writer] < 1 {
		return nil, bad("Field vector_clock must count your own deltas (%q: 1, 2, ...) with consistency causal.", writer)
	}
	if req.GetHasBaseVersion() && req.GetBaseVersion() < 0 {
		return nil, bad("Field base_version must not be negative.")
	}
	if mode == fedsyncv1.Consistency_CONSISTENCY_STRONG && !req.GetHasExpectedVersion() {
		return nil, bad("Field expected_version is required with consistency strong (0 creates).")
	}
	if req.GetHasExpectedVersion() && mode != fedsyncv1.Consistency_CONSISTENCY_STRONG {
		return nil, bad("Field expected_version is only allowed with consistency strong.")
	}
	if req.GetExpectedVersion() < 0 {
		return nil, bad("Field expected_version must not be negative.")
	}
	for agent, n := range req.GetVectorClock() {
		if agent == "" || n < 0 {
			return nil, bad("Field vector_clock must map agent ids to counters of at least 0.")
		}
	}
	priority := int32(5)
	if req.GetHasPriority() {
		priority = req.GetPriority()
	}
	return &fedsyncv1.Delta{
		// The patch travels as the fields decoded here: no later stage parses it again.
		Id: req.GetId(), DataType: req.GetDataType(), PatchFields: patch.Fields(), Consistency: mode,
		ExpectedVersion: req.GetExpectedVersion(), HasExpectedVersion: req.GetHasExpectedVersion(),
		VectorClock: req.GetVectorClock(), MessageId: req.GetMessageId(), Priority: priority,
		BaseVersion: req.GetBaseVersion(), HasBaseVersion: req.GetHasBaseVersion(),
	}, nil
}

func (s *service) PushState(ctx context.Context, req *fedsyncv1.PushStateRequest) (*fedsyncv1.PushStateResponse, error) {
	claims, ok := authtoken.FromContext(ctx)
	if !ok {
		return nil, apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
	// Held until the write is answered, so a pause waits for the writes it
	// did not stop (SyncControl).
	s.control.gate.RLock()
	defer s.control.gate.RUnlock()
	if s.control.paused.Load() {
		return nil, apierr.New(apierr.Unavailable, "Writes are paused for maintenance; reads and subscriptions keep working. Retry later.").WithRetryAfter(30 * time.Second)
	}
	d, err := check(req, s.types.Get(), claims.Subject)
	if err != nil {
		return nil, err
	}
	if err := access.CheckWrite(claims, d.Id); err != nil {
		return nil, err
	}
	if d.MessageId == "" {
		d.MessageId = ulid.Make().String()
	}
	d.Writer, d.Region, d.Hlc = claims.Subject, s.region, s.clock.Now()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.DeltaAttributes(d.Writer, d.DataType)...)
		span.SetAttributes(attribute.String("fedsync.id", d.Id), attribute.String("fedsync.message_id", d.MessageId))
	}

	if d.Consistency == fedsyncv1.Consistency_CONSISTENCY_STRONG {
		sctx, cancel := context.WithTimeout(ctx, s.strongTimeout)
		defer cancel()
		version, err := s.merge.CommitStrong(sctx, d)
		if err != nil {
			if apierr.IsInfrastructure(err) || sctx.Err() != nil {
				return nil, apierr.New(apierr.Unavailable, "The strong write of %s was not confirmed in time; retry with the same message_id.", d.Id).WithRetryAfter(time.Second)
			}
			return nil, err
		}
		return &fedsyncv1.PushStateResponse{MessageId: d.MessageId, Status: "committed", Version: version}, nil
	}

	if err := s.admission.check(); err != nil {
		return nil, err
	}
	if req.GetMessageId() == "" {
		return s.produce(ctx, d)
	}
	// The same delta sent again while its first copy is on its way to Kafka
	// (a client retrying on a timeout) shares that produce.
	return s.inflight.do(ctx, d.Writer+"\x00"+d.Id+"\x00"+d.MessageId, func() (*fedsyncv1.PushStateResponse, error) { return s.produce(ctx, d) })
}

// produce appends d to fedsync.deltas and answers once Kafka acknowledged it.
func (s *service) produce(ctx context.Context, d *fedsyncv1.Delta) (*fedsyncv1.PushStateResponse, error) {
	payload, err := proto.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("encode delta: %w", err)
	}
	env, err := proto.Marshal(&fedsyncv1.SyncMessage{
		MessageId: d.MessageId, SenderId: d.Writer, Timestamp: d.Hlc, Type: fedsyncv1.MessageType_STATE_UPDATE,
		Payload: payload, Priority: d.Priority, Metadata: map[string]string{"region": s.region, "data_type": d.DataType},
	})
	if err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, s.produceTimeout)
	defer cancel()
	if err := s.deltas.Publish(pctx, kafkabus.Record{Key: []byte(d.Id), Value: env}); err != nil {
		return nil, apierr.New(apierr.Unavailable, "The delta log is unreachable; nothing was accepted. Retry with the same message_id.").WithRetryAfter(time.Second)
	}
	s.admission.admitted()
	return &fedsyncv1.PushStateResponse{MessageId: d.MessageId, Status: "accepted"}, nil
}

func (s *service) Heartbeat(ctx context.Context, _ *fedsyncv1.HeartbeatRequest) (*fedsyncv1.HeartbeatResponse, error) {
	claims, ok := authtoken.FromContext(ctx)
	if !ok {
		return nil, apierr.New(apierr.Unauthenticated, "A bearer token is required.")
	}
	if wait := s.beats.allow(claims.Subject, time.Now()); wait > 0 {
		return nil, apierr.New(apierr.RateLimited, "Agent %s sent a heartbeat less than %s ago; one per %s is enough.", claims.Subject, s.beats.every, s.beats.every).
			WithDetail("reason", "heartbeat_rate").WithDetail("min_interval_ms", s.beats.every.Milliseconds()).WithRetryAfter(wait)
	}
	hb, _ := proto.Marshal(&fedsyncv1.Heartbeat{AgentId: claims.Subject, Region: s.region, SentAt: time.Now().UnixNano()})
	env, _ := proto.Marshal(&fedsyncv1.SyncMessage{
		MessageId: ulid.Make().String(), SenderId: claims.Subject, Timestamp: s.clock.Now(),
		Type: fedsyncv1.MessageType_HEARTBEAT, Payload: hb,
	})
	pctx, cancel := context.WithTimeout(ctx, s.produceTimeout)
	defer cancel()
	if err := s.heartbeats.Publish(pctx, kafkabus.Record{Key: []byte(claims.Subject), Value: env}); err != nil {
		return nil, apierr.New(apierr.Unavailable, "The heartbeat log is unreachable.").WithRetryAfter(time.Second)
	}
	return &fedsyncv1.HeartbeatResponse{}, nil
}

// WithAdmission makes the service refuse deltas while too much admitted work
// waits to be merged.
func (s *service) WithAdmission(a *admission) *service {
	s.admission = a
	return s
}

// WithControl makes the service follow a shared pause state.
func (s *service) WithControl(store ControlStore) *service {
	s.control = &control{store: store}
	return s
}

func (s *service) SetPaused(ctx context.Context, req SetPausedRequest) (*PauseResult, error) {
	st, err := s.control.store.SetControl(ctx, &fedsyncv1.ControlState{Paused: req.Paused, By: req.By, Reason: req.Reason, At: time.Now().UnixNano()})
	if err != nil {
		return nil, err
	}
	s.control.apply(st.GetPaused())
	res := &PauseResult{State: st, Instances: 1}
	if s.fanout != nil {
		// Every validation instance, in every region, applies it before
		// the call returns.
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		instances, failed := s.fanout(fctx)
		res.Instances = len(instances)
		for addr := range failed {
			res.Unconfirmed = append(res.Unconfirmed, addr)
		}
		sort.Strings(res.Unconfirmed)
	}
	return res, nil
}

func (s *service) SyncControl(ctx context.Context, _ *fedsyncv1.SyncControlRequest) (*fedsyncv1.SyncControlResponse, error) {
	st, err := s.control.store.GetControl(ctx)
	if err != nil {
		return nil, err
	}
	s.control.apply(st.GetPaused())
	return &fedsyncv1.SyncControlResponse{State: st}, nil
}

// WithFanout makes SetPaused apply the new state on every validation
// instance (fn calls SyncControl on each) before it returns.
func (s *service) WithFanout(fn func(ctx context.Context) ([]string, map[string]error)) *service {
	s.fanout = fn
	return s
}

func (s *service) GetControl(ctx context.Context, _ struct{}) (*fedsyncv1.ControlState, error) {
	return s.control.store.GetControl(ctx)
}
