package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	fedsync "github.com/fedsync/fedsync/sdk/go"
)

// app holds the global flags and what the commands share.
type app struct {
	stdout, stderr io.Writer
	edge, output   string
	token          string
	timeout        time.Duration
}

// credentials is what login caches (0600): a token, not the secret.
type credentials struct {
	Edge        string    `json:"edge"`
	ClientID    string    `json:"client_id"`
	AccessToken string    `json:"access_token"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// credentialsPath is $FEDCTL_CREDENTIALS, or fedctl/credentials.json in the
// user's configuration directory.
func credentialsPath() (string, error) {
	if p := os.Getenv("FEDCTL_CREDENTIALS"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no configuration directory for the token cache (%v); set FEDCTL_CREDENTIALS", err)
	}
	return filepath.Join(dir, "fedctl", "credentials.json"), nil
}

func loadCredentials() (*credentials, error) {
	p, err := credentialsPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("token cache %s is damaged (%v); log in again", p, err)
	}
	return &c, nil
}

func saveCredentials(c *credentials) (string, error) {
	p, err := credentialsPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// edgeURL is --edge, $FEDSYNC_EDGE, the edge of the cached login, or the
// first edge of make run.
func (a *app) edgeURL(cached *credentials) string {
	switch {
	case a.edge != "":
		return a.edge
	case os.Getenv("FEDSYNC_EDGE") != "":
		return os.Getenv("FEDSYNC_EDGE")
	case cached != nil && cached.Edge != "":
		return cached.Edge
	}
	return "http://127.0.0.1:8080"
}

// client returns an SDK client with the token of --token, $FEDSYNC_TOKEN or
// the cached login.
func (a *app) client() (*fedsync.Client, error) {
	cached, err := loadCredentials()
	if err != nil {
		return nil, &exitError{code: exitAuth, err: err}
	}
	tok := a.token
	if tok == "" {
		tok = os.Getenv("FEDSYNC_TOKEN")
	}
	if tok == "" && cached != nil {
		if !cached.ExpiresAt.IsZero() && time.Now().After(cached.ExpiresAt) {
			return nil, &exitError{code: exitAuth, err: fmt.Errorf("the token of %s expired at %s", cached.ClientID, cached.ExpiresAt.Local().Format(time.RFC3339)),
				hint: "log in again with: fedctl login --client-id " + cached.ClientID}
		}
		tok = cached.AccessToken
	}
	if tok == "" {
		return nil, &exitError{code: exitAuth, err: errors.New("not logged in")}
	}
	return fedsync.New(fedsync.Config{BaseURL: a.edgeURL(cached), Token: tok}), nil
}

// session is what most commands start with: the client and the command's
// context (its cancel must be called).
func (a *app) session(cmd *cobra.Command) (context.Context, *fedsync.Client, func(), error) {
	c, err := a.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := a.ctx(cmd)
	return ctx, c, cancel, nil
}

// publicClient needs no token (health).
func (a *app) publicClient() *fedsync.Client {
	cached, _ := loadCredentials()
	return fedsync.New(fedsync.Config{BaseURL: a.edgeURL(cached)})
}

// ctx is the command's context: --timeout, and Ctrl-C.
func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	if a.timeout <= 0 {
		return ctx, stop
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	return ctx, func() { cancel(); stop() }
}

// print writes v as JSON (--output json) or, for tables, the rows.
func (a *app) print(v any, header []string, rows [][]string) error {
	switch a.output {
	case "json":
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table":
		w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		if header != nil {
			fmt.Fprintln(w, strings.Join(header, "\t"))
		}
		for _, r := range rows {
			fmt.Fprintln(w, strings.Join(r, "\t"))
		}
		return w.Flush()
	}
	return usageErr("--output must be json or table, not %q", a.output)
}

// compact renders a JSON value on one line for a table cell.
func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := string(b)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// nArgs wants exactly n arguments, named for the message.
func nArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErr("%s needs %d argument(s): %s (got %d)", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// minArgs wants at least n arguments.
func minArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageErr("%s needs %s", cmd.CommandPath(), names)
		}
		return nil
	}
}

// jsonArg reads a JSON value given inline or as @file (@- for stdin).
func jsonArg(flag, s string) (any, error) {
	var raw []byte
	switch {
	case s == "@-":
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			return nil, err
		}
		raw = b
	case strings.HasPrefix(s, "@"):
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, usageErr("--%s: %v", flag, err)
		}
		raw = b
	default:
		raw = []byte(s)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, usageErr("--%s is not JSON: %v", flag, err)
	}
	return v, nil
}
