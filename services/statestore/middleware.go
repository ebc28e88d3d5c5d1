package statestore

import (
	"context"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedsync/fedsync/libs/audit"
	fedsyncv1 "github.com/fedsync/fedsync/proto/fedsync/v1"
)

// Middleware decorates a Service.
type Middleware func(Service) Service

// instrumenting counts commits and duplicate applies.
type instrumenting struct {
	Service
	commits *prometheus.CounterVec
	audit   *audit.Log
}

// InstrumentingMiddleware counts commits by data type and duplicates suppressed
// by message id, and records every committed change in the audit log.
func InstrumentingMiddleware(reg prometheus.Registerer, log *audit.Log) Middleware {
	commits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fedsync_statestore_commits_total", Help: "Changes given to Apply and ApplyBatch by data type and result (committed, duplicate, or refused: a version conflict, causal order or data type error).",
	}, []string{"data_type", "result"})
	reg.MustRegister(commits)
	return func(next Service) Service { return &instrumenting{Service: next, commits: commits, audit: log} }
}

func (m *instrumenting) Apply(ctx context.Context, req *fedsyncv1.ApplyRequest) (*fedsyncv1.ApplyResponse, error) {
	resp, err := m.Service.Apply(ctx, req)
	if err == nil {
		result := "committed"
		if resp.GetDuplicate() {
			result = "duplicate"
		}
		m.commits.WithLabelValues(req.GetDataType(), result).Inc()
		if !resp.GetDuplicate() {
			m.audit.Record(ctx, audit.Record{Actor: req.GetWriter(), Action: "state.commit", Data: fmt.Sprintf("%s@%d", req.GetId(), resp.GetVersion()), Result: "success", Detail: req.GetMessageId()})
		}
	}
	return resp, err
}

func (m *instrumenting) ApplyBatch(ctx context.Context, req *fedsyncv1.ApplyBatchRequest) (*fedsyncv1.ApplyBatchResponse, error) {
	resp, err := m.Service.ApplyBatch(ctx, req)
	if err != nil {
		return resp, err
	}
	// One audit record per batch names every change it committed (writer,
	// document@version, message id), so the chain grows by a record per
	// transaction, not per change.
	var changes []string
	writers := map[string]bool{}
	for i, r := range resp.GetResults() {
		item := req.GetItems()[i]
		switch {
		case r.GetErrorCode() != "":
			m.commits.WithLabelValues(item.GetDataType(), "refused").Inc()
		case r.GetDuplicate():
			m.commits.WithLabelValues(item.GetDataType(), "duplicate").Inc()
		default:
			m.commits.WithLabelValues(item.GetDataType(), "committed").Inc()
			changes = append(changes, fmt.Sprintf("%s:%s@%d:%s", item.GetWriter(), item.GetId(), r.GetVersion(), item.GetMessageId()))
			writers[item.GetWriter()] = true
		}
	}
	if len(changes) > 0 {
		actor := "merge"
		if len(writers) == 1 {
			for w := range writers {
				actor = w
			}
		}
		m.audit.Record(ctx, audit.Record{Actor: actor, Action: "state.commit", Data: fmt.Sprintf("%d changes", len(changes)), Result: "success",
			Detail: strings.Join(changes, " ")})
	}
	return resp, err
}

// A backup taken or restored is on the audit chain, with who asked.

func (m *instrumenting) CreateBackup(ctx context.Context, req *fedsyncv1.CreateBackupRequest) (*fedsyncv1.CreateBackupResponse, error) {
	resp, err := m.Service.CreateBackup(ctx, req)
	m.auditBackup(ctx, "backup.create", req.GetRequestedBy(), resp.GetBackup(), err)
	return resp, err
}

func (m *instrumenting) RestoreBackup(ctx context.Context, req *fedsyncv1.RestoreBackupRequest) (*fedsyncv1.RestoreBackupResponse, error) {
	resp, err := m.Service.RestoreBackup(ctx, req)
	b := resp.GetBackup()
	if b == nil {
		b = &fedsyncv1.BackupInfo{Id: req.GetId()}
	}
	m.auditBackup(ctx, "backup.restore", req.GetRequestedBy(), b, err)
	return resp, err
}

func (m *instrumenting) auditBackup(ctx context.Context, action, actor string, b *fedsyncv1.BackupInfo, err error) {
	if actor == "" {
		actor = "statestore" // the schedule
	}
	r := audit.Record{Actor: actor, Action: action, Data: b.GetId(), Result: "success",
		Detail: fmt.Sprintf("%d documents, digest %s, sha256 %s", b.GetDocuments(), b.GetDocumentsDigest(), b.GetSha256())}
	if err != nil {
		r.Result, r.Detail = "failure", err.Error()
	}
	m.audit.Record(ctx, r)
}
