// Package fedsync is the Go client of fedsync's public API (docs/contract-v1.md):
// a client-credentials token refreshed before it expires, Push, Get, Query,
// live subscriptions over WebSocket that reconnect with exponential backoff
// and jitter and resume from their last cursor, a compare-and-set helper for
// strong writes, the review queue, pause and resume, client and key
// administration, and health. Every error the API returns is an *Error
// carrying the contract's code.
//
//	c := fedsync.New(fedsync.Config{BaseURL: "http://127.0.0.1:8080", ClientID: "ai-007", ClientSecret: secret})
//	res, err := c.Push(ctx, fedsync.Delta{ID: "ai-007:beliefs", DataType: "note", Patch: map[string]any{"x": 1}})
package fedsync
