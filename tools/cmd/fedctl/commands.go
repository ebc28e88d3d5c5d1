package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	fedsync "github.com/fedsync/fedsync/sdk/go"
)

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "fedctl",
		Short: "fedsync's command line: documents, live changes, the review queue, clients, keys, health",
		Long: `fedctl talks to a fedsync federation through a regional edge (--edge,
$FEDSYNC_EDGE, the edge you logged in to, or http://127.0.0.1:8080 of make run).

Log in once with a client's credentials; the token is cached (not the secret)
in $FEDCTL_CREDENTIALS or your configuration directory:

  fedctl login --client-id admin --secret-stdin < secret

Exit status: 0 done; 1 the operation failed; 2 usage; 3 not logged in or the
token was refused; 4 permission denied; 5 not found; 6 version conflict;
7 unavailable or rate limited (nothing was applied: try again later).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr("a command is required")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.edge, "edge", "", "edge URL (default $FEDSYNC_EDGE, the edge logged in to, or http://127.0.0.1:8080)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&a.token, "token", "", "bearer token to use instead of the cached login (also $FEDSYNC_TOKEN)")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "give up after this long (0: never; watch ignores it unless set)")
	root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp
	})
	root.AddCommand(a.loginCmd(), a.putCmd(), a.getCmd(), a.queryCmd(), a.watchCmd(), a.conflictsCmd(), a.clientsCmd(), a.keysCmd(),
		a.pauseCmd(true), a.pauseCmd(false), a.healthCmd(), a.auditCmd(), a.tlsCmd(), a.atRestCmd(), a.backupCmd())
	return root
}

func (a *app) loginCmd() *cobra.Command {
	var clientID string
	var secretStdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Get a token with a client's credentials and cache it",
		Long: `login gets a token by the client-credentials grant and caches it (mode 0600)
with the edge it came from. The secret comes from --secret-stdin (one line) or
$FEDSYNC_CLIENT_SECRET; it is not stored.`,
		Example: `  fedctl login --client-id admin --secret-stdin < secret
  FEDSYNC_CLIENT_SECRET=... fedctl login --client-id ai-007 --edge http://127.0.0.1:8090`,
		Args: nArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if clientID == "" {
				return usageErr("--client-id is required")
			}
			secret := os.Getenv("FEDSYNC_CLIENT_SECRET")
			if secretStdin {
				line, err := bufio.NewReader(os.Stdin).ReadString('\n')
				if err != nil && line == "" {
					return usageErr("--secret-stdin: no secret on standard input")
				}
				secret = strings.TrimSpace(line)
			}
			if secret == "" {
				return usageErr("no secret: pass --secret-stdin or set FEDSYNC_CLIENT_SECRET")
			}
			cached, _ := loadCredentials()
			edge := a.edgeURL(cached)
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			c := fedsync.New(fedsync.Config{BaseURL: edge, ClientID: clientID, ClientSecret: secret})
			tok, exp, err := c.Token(ctx)
			if fedsync.CodeOf(err) == fedsync.CodeInvalidClient || fedsync.CodeOf(err) == fedsync.CodeUnauthenticated {
				return &exitError{code: exitAuth, err: fmt.Errorf("%s: the client id or secret is wrong, or the client is disabled", edge), hint: "check the credentials (make run writes them to .fedsync/dev/clients.json)"}
			}
			if err != nil {
				return err
			}
			path, err := saveCredentials(&credentials{Edge: edge, ClientID: clientID, AccessToken: tok, ExpiresAt: exp})
			if err != nil {
				return fmt.Errorf("cache the token: %w", err)
			}
			out := map[string]any{"client_id": clientID, "edge": edge, "expires_at": exp.UTC().Format(time.RFC3339), "cache": path}
			return a.print(out, nil, [][]string{{"logged in as " + clientID + " at " + edge + "; token valid until " + exp.Local().Format(time.RFC3339) + " (cached in " + path + ")"}})
		},
	}
	cmd.Flags().StringVar(&clientID, "client-id", "", "client id")
	cmd.Flags().BoolVar(&secretStdin, "secret-stdin", false, "read the client secret from standard input")
	return cmd
}

func stateRows(sts []fedsync.State) [][]string {
	rows := make([][]string, len(sts))
	for i, st := range sts {
		rows[i] = []string{st.ID, st.DataType, strconv.FormatInt(st.Version, 10), st.UpdatedBy, st.UpdatedAt.UTC().Format(time.RFC3339), compact(st.Value)}
	}
	return rows
}

var stateHeader = []string{"ID", "DATA TYPE", "VERSION", "UPDATED BY", "UPDATED AT", "VALUE"}

func (a *app) putCmd() *cobra.Command {
	var d fedsync.Delta
	var patch string
	var expected int64 = -1
	cmd := &cobra.Command{
		Use:   "put ID",
		Short: "Write a change to a document (POST /api/v1/sync/state)",
		Example: `  fedctl put ai-007:notes --type note --patch '{"mood":"curious"}'
  fedctl put ai-007:plan --type note --patch @plan.json --consistency strong --expected-version 3`,
		Args: nArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if d.DataType == "" || patch == "" {
				return usageErr("--type and --patch are required")
			}
			v, err := jsonArg("patch", patch)
			if err != nil {
				return err
			}
			obj, ok := v.(map[string]any)
			if !ok {
				return usageErr("--patch must be a JSON object of the fields to set (null deletes a field)")
			}
			d.ID, d.Patch = args[0], obj
			if expected >= 0 {
				d.ExpectedVersion = &expected
			}
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			res, err := c.PushOnce(ctx, d)
			if err != nil {
				return err
			}
			line := fmt.Sprintf("%s: %s (message %s)", d.ID, res.Status, res.MessageID)
			if res.Version > 0 {
				line = fmt.Sprintf("%s: %s at version %d (message %s)", d.ID, res.Status, res.Version, res.MessageID)
			}
			return a.print(res, nil, [][]string{{line}})
		},
	}
	f := cmd.Flags()
	f.StringVar(&d.DataType, "type", "", "data type (required)")
	f.StringVar(&patch, "patch", "", "JSON object of the fields to set, inline, @file or @- (required)")
	f.StringVar(&d.Consistency, "consistency", "", "eventual (default), causal or strong")
	f.Int64Var(&expected, "expected-version", -1, "strong only: the version the change is based on (0: create only)")
	f.StringVar(&d.MessageID, "message-id", "", "idempotency key (default: a new random one)")
	return cmd
}

func (a *app) getCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Read a document",
		Args:  nArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			st, err := c.Get(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(st, stateHeader, stateRows([]fedsync.State{*st}))
		},
	}
}

func (a *app) queryCmd() *cobra.Command {
	var q fedsync.Query
	var all bool
	cmd := &cobra.Command{
		Use:     "query",
		Short:   "List documents by id prefix and data type",
		Example: "  fedctl query --prefix ai-007: --all -o json",
		Args:    nArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			var items []fedsync.State
			pages := 0
			err = c.QueryAll(ctx, q, func(p *fedsync.Page) error {
				items = append(items, p.Items...)
				pages++
				if all && p.NextPageToken != "" {
					fmt.Fprintf(a.stderr, "page %d: %d documents so far\n", pages, len(items))
					return nil
				}
				if !all && p.NextPageToken != "" {
					fmt.Fprintf(a.stderr, "more documents follow: --all reads every page\n")
				}
				return errStop
			})
			if err != nil && !errors.Is(err, errStop) {
				return err
			}
			if items == nil {
				items = []fedsync.State{}
			}
			return a.print(items, stateHeader, stateRows(items))
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.IDPrefix, "prefix", "", "id prefix")
	f.StringVar(&q.DataType, "type", "", "data type")
	f.IntVar(&q.Limit, "limit", 100, "documents per page")
	f.BoolVar(&all, "all", false, "read every page")
	return cmd
}

var errStop = errors.New("stop")

func (a *app) watchCmd() *cobra.Command {
	var f fedsync.Filter
	var from string
	var count int
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Print committed changes live, reconnecting and resuming by itself",
		Long: `watch subscribes over WebSocket and prints every committed change that
matches (table: one line per change; json: one JSON object per line). It
reconnects with exponential backoff and resumes from the last cursor, so no
change is missed; reconnects are reported on standard error. Ctrl-C stops it.`,
		Example: "  fedctl watch --prefix ai-007: -o json\n  fedctl watch --from 1234 --count 10",
		Args:    nArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("timeout") {
				a.timeout = 0 // a watch runs until stopped
			}
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			sub := c.Subscribe(ctx, f, fedsync.SubscribeOptions{FromCursor: from})
			seen := 0
			for ev := range sub.Events() {
				switch ev.Type {
				case fedsync.EventConnected:
					fmt.Fprintf(a.stderr, "watching %s from cursor %s\n", c.BaseURL(), ev.Cursor)
				case fedsync.EventReconnecting:
					fmt.Fprintf(a.stderr, "stream broke (%v); reconnecting in %s from cursor %s\n", ev.Err, ev.Delay.Round(time.Millisecond), ev.Cursor)
				case fedsync.EventChange, fedsync.EventSnapshot:
					ch := ev.Change
					if a.output == "json" {
						b, _ := jsonLine(map[string]any{"type": ev.Type, "id": ch.ID, "data_type": ch.DataType, "version": ch.Version,
							"value": ch.Value, "updated_by": ch.UpdatedBy, "updated_at": ch.UpdatedAt, "cursor": ch.Cursor})
						fmt.Fprintln(a.stdout, b)
					} else {
						fmt.Fprintf(a.stdout, "%s\t%s\tv%d\t%s\t%s\n", ch.Cursor, ch.ID, ch.Version, ch.UpdatedBy, compact(ch.Value))
					}
					if seen++; count > 0 && seen >= count {
						return nil
					}
				}
			}
			if err := sub.Err(); err != nil {
				return err
			}
			if ctx.Err() != nil && count > 0 && a.timeout > 0 {
				return &exitError{code: exitFailed, err: fmt.Errorf("%d of %d changes within %s", seen, count, a.timeout)}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.IDPrefix, "prefix", "", "id prefix")
	fl.StringSliceVar(&f.DataTypes, "type", nil, "data types (repeat or comma-separate)")
	fl.StringVar(&from, "from", "", "resume after this cursor")
	fl.IntVar(&count, "count", 0, "stop after this many changes (0: run until stopped)")
	return cmd
}

func (a *app) conflictsCmd() *cobra.Command {
	cmd := group("conflicts", "The review queue (L3+)")
	var status string
	list := &cobra.Command{
		Use:   "list",
		Short: "List conflicts (pending by default)",
		Args:  nArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			var all []fedsync.Conflict
			token := ""
			for {
				cs, next, err := c.Conflicts(ctx, status, 200, token)
				if err != nil {
					return err
				}
				all = append(all, cs...)
				if next == "" {
					break
				}
				token = next
			}
			if all == nil {
				all = []fedsync.Conflict{}
			}
			rows := make([][]string, len(all))
			for i, k := range all {
				rows[i] = []string{k.ID, k.StateID, k.Field, k.Type, k.Status, string(k.Local), string(k.Remote), k.DetectedAt}
			}
			return a.print(all, []string{"ID", "DOCUMENT", "FIELD", "TYPE", "STATUS", "LOCAL", "REMOTE", "DETECTED"}, rows)
		},
	}
	list.Flags().StringVar(&status, "status", "pending", "pending, resolved or all")
	var choice, value string
	resolve := &cobra.Command{
		Use:     "resolve CONFLICT-ID",
		Short:   "Resolve a conflict: --choice local, remote, or value with --value",
		Example: "  fedctl conflicts resolve c-123 --choice remote\n  fedctl conflicts resolve c-123 --choice value --value '\"grey\"'",
		Args:    nArgs("CONFLICT-ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v any
			switch choice {
			case "local", "remote":
			case "value":
				if value == "" {
					return usageErr("--choice value needs --value (JSON)")
				}
				var err error
				if v, err = jsonArg("value", value); err != nil {
					return err
				}
			default:
				return usageErr("--choice must be local, remote or value")
			}
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			k, version, err := c.ResolveConflict(ctx, args[0], choice, v)
			if err != nil {
				return err
			}
			return a.print(map[string]any{"conflict": k, "version": version}, nil,
				[][]string{{fmt.Sprintf("%s resolved (%s): %s at version %d", k.ID, choice, k.StateID, version)}})
		},
	}
	resolve.Flags().StringVar(&choice, "choice", "", "local, remote or value")
	resolve.Flags().StringVar(&value, "value", "", "with --choice value: the JSON value, inline or @file")
	cmd.AddCommand(list, resolve)
	return cmd
}

func clientRows(cs []fedsync.ClientInfo) [][]string {
	rows := make([][]string, len(cs))
	for i, c := range cs {
		state := "enabled"
		if c.Disabled {
			state = "disabled"
		}
		rows[i] = []string{c.ClientID, c.Role, c.Level, c.Region, state, c.CreatedAt.UTC().Format(time.RFC3339)}
	}
	return rows
}

var clientHeader = []string{"CLIENT", "ROLE", "LEVEL", "REGION", "STATE", "CREATED"}

func (a *app) clientsCmd() *cobra.Command {
	cmd := group("clients", "Client administration (L4)")
	withClient := func(fn func(cmd *cobra.Command, c *fedsync.Client, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return fn(cmd, c, args)
		}
	}
	list := &cobra.Command{Use: "list", Short: "List clients", Args: nArgs(), RunE: withClient(func(cmd *cobra.Command, c *fedsync.Client, _ []string) error {
		ctx, cancel := a.ctx(cmd)
		defer cancel()
		cs, err := c.Clients(ctx)
		if err != nil {
			return err
		}
		sort.Slice(cs, func(i, j int) bool { return cs[i].ClientID < cs[j].ClientID })
		return a.print(cs, clientHeader, clientRows(cs))
	})}
	var n fedsync.NewClient
	create := &cobra.Command{Use: "create CLIENT-ID", Short: "Register a client; prints its secret once", Args: nArgs("CLIENT-ID"),
		Example: "  fedctl clients create ai-054 --role ai_system_basic --level L2 --region eu",
		RunE: withClient(func(cmd *cobra.Command, c *fedsync.Client, args []string) error {
			n.ClientID = args[0]
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			res, err := c.CreateClient(ctx, n)
			if err != nil {
				return err
			}
			return a.print(res, []string{"CLIENT", "SECRET (shown once)"}, [][]string{{res.Client.ClientID, res.ClientSecret}})
		})}
	create.Flags().StringVar(&n.Role, "role", "ai_system_basic", "role")
	create.Flags().StringVar(&n.Level, "level", "L2", "level L1-L4")
	create.Flags().StringVar(&n.Region, "region", "", "home region")
	create.Flags().StringSliceVar(&n.Domains, "domains", nil, "domains the client may write")
	setDisabled := func(use, short string, disabled bool) *cobra.Command {
		return &cobra.Command{Use: use + " CLIENT-ID", Short: short, Args: nArgs("CLIENT-ID"),
			RunE: withClient(func(cmd *cobra.Command, c *fedsync.Client, args []string) error {
				ctx, cancel := a.ctx(cmd)
				defer cancel()
				res, err := c.SetClientDisabled(ctx, args[0], disabled)
				if err != nil {
					return err
				}
				return a.print(res, clientHeader, clientRows([]fedsync.ClientInfo{*res}))
			})}
	}
	rotate := &cobra.Command{Use: "rotate CLIENT-ID", Short: "Give a client a new secret; prints it once", Args: nArgs("CLIENT-ID"),
		RunE: withClient(func(cmd *cobra.Command, c *fedsync.Client, args []string) error {
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			res, err := c.RotateClientSecret(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(res, []string{"CLIENT", "NEW SECRET (shown once)"}, [][]string{{res.Client.ClientID, res.ClientSecret}})
		})}
	cmd.AddCommand(list, create, setDisabled("disable", "Disable a client: no new tokens, live ones refused", true),
		setDisabled("enable", "Enable a disabled client", false), rotate)
	return cmd
}

func (a *app) keysCmd() *cobra.Command {
	cmd := group("keys", "Token-signing keys (L4)")
	show := func(use, short string, rotate bool) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: nArgs(), RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			var ks []fedsync.Key
			if rotate {
				ks, err = c.RotateKeys(ctx)
			} else {
				ks, err = c.Keys(ctx)
			}
			if err != nil {
				return err
			}
			rows := make([][]string, len(ks))
			for i, k := range ks {
				retired := ""
				if !k.RetiredAt.IsZero() {
					retired = k.RetiredAt.UTC().Format(time.RFC3339)
				}
				rows[i] = []string{k.ID, k.State, k.CreatedAt.UTC().Format(time.RFC3339), retired}
			}
			return a.print(ks, []string{"KID", "STATE", "CREATED", "RETIRED"}, rows)
		}}
	}
	cmd.AddCommand(show("list", "List the signing keys", false), show("rotate", "The next key signs; the current one retires", true))
	return cmd
}

func (a *app) backupCmd() *cobra.Command {
	cmd := group("backup", "Cold backups of the statestore (L4): create, list, verify, restore")
	cmd.Long = `The statestore's leader exports its state every -backup.interval (daily by
default) to its backup store (-backup.target: a directory, or s3://BUCKET/PREFIX
through the S3 API), sealed with its at-rest key, with a manifest carrying the
SHA-256 digest of the object and a digest of every document. Backups older
than -backup.retention (90 days) are deleted; the newest never is.

These commands drive it through the edge. Create, verify and restore can take
minutes on a large store: --timeout defaults to 10m here.`
	header := []string{"ID", "CREATED", "INDEX", "DOCUMENTS", "BYTES", "KEY", "SHA-256"}
	row := func(b fedsync.Backup) []string {
		return []string{b.ID, b.CreatedAt.UTC().Format(time.RFC3339), strconv.FormatUint(b.RaftIndex, 10), strconv.FormatInt(b.Documents, 10),
			strconv.FormatInt(b.Size, 10), b.KeyID, b.SHA256[:min(16, len(b.SHA256))]}
	}
	long := func(cmd *cobra.Command) {
		if !cmd.Flags().Changed("timeout") {
			a.timeout = 10 * time.Minute
		}
	}
	one := func(use, short, long_ string, args []string, do func(ctx context.Context, c *fedsync.Client, args []string) (*fedsync.Backup, error), done string) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Long: long_, Args: nArgs(args...), RunE: func(cmd *cobra.Command, args []string) error {
			long(cmd)
			ctx, c, cancel, err := a.session(cmd)
			if err != nil {
				return err
			}
			defer cancel()
			b, err := do(ctx, c, args)
			if err != nil {
				return err
			}
			line := fmt.Sprintf("%s %s: %d documents at index %d, %d bytes, sha256 %s, in %s", b.ID, done, b.Documents, b.RaftIndex, b.Size, b.SHA256, b.Where)
			return a.print(b, nil, [][]string{{line}})
		}}
	}
	create := one("create", "Export the statestore's state now", "", nil,
		func(ctx context.Context, c *fedsync.Client, _ []string) (*fedsync.Backup, error) {
			return c.CreateBackup(ctx)
		}, "created")
	verify := one("verify ID", "Read a backup whole and check it against its manifest",
		"verify fetches the backup, checks the SHA-256 of every byte, opens every sealed\nchunk and checks the documents it holds against the manifest. Exit 1 when any\ncheck fails.", []string{"ID"},
		func(ctx context.Context, c *fedsync.Client, args []string) (*fedsync.Backup, error) {
			return c.VerifyBackup(ctx, args[0])
		}, "verified")
	var yes bool
	restore := one("restore ID", "Make a backup the statestore's state (every later change is lost)",
		`restore verifies the backup, then the leader installs it as a Raft snapshot
and every replica takes it. Every change committed after the backup is gone:
pause the federation first (fedctl pause), and resume after. The replicas need
the at-rest key the backup names (fedctl at-rest add-key keeps old keys).
deploy/rollback.sh runs it as step 4 with --restore-backup ID.`, []string{"ID"},
		func(ctx context.Context, c *fedsync.Client, args []string) (*fedsync.Backup, error) {
			if !yes {
				return nil, usageErr("restore replaces the statestore's state with backup %s: pass --yes to confirm", args[0])
			}
			return c.RestoreBackup(ctx, args[0])
		}, "restored")
	restore.Flags().BoolVar(&yes, "yes", false, "confirm: replace the statestore's state")
	list := &cobra.Command{Use: "list", Short: "List the backups, newest first", Args: nArgs(), RunE: func(cmd *cobra.Command, _ []string) error {
		ctx, c, cancel, err := a.session(cmd)
		if err != nil {
			return err
		}
		defer cancel()
		bs, err := c.Backups(ctx)
		if err != nil {
			return err
		}
		if bs == nil {
			bs = []fedsync.Backup{}
		}
		rows := make([][]string, len(bs))
		for i, b := range bs {
			rows[i] = row(b)
		}
		return a.print(bs, header, rows)
	}}
	cmd.AddCommand(create, list, verify, restore)
	return cmd
}

func (a *app) pauseCmd(pause bool) *cobra.Command {
	use, short := "resume", "Resume the federation's writes (L4)"
	if pause {
		use, short = "pause", "Pause the federation's writes (L4): pushes get 503 until resume"
	}
	var reason string
	cmd := &cobra.Command{Use: use, Short: short, Args: nArgs(), RunE: func(cmd *cobra.Command, _ []string) error {
		ctx, c, cancel, err := a.session(cmd)
		if err != nil {
			return err
		}
		defer cancel()
		var st *fedsync.ControlState
		if pause {
			st, err = c.Pause(ctx, reason)
		} else {
			st, err = c.Resume(ctx, reason)
		}
		if err != nil {
			return err
		}
		line := fmt.Sprintf("writes %s by %s", map[bool]string{true: "paused", false: "resumed"}[st.Paused], st.By)
		if len(st.Unconfirmed) > 0 {
			line += fmt.Sprintf("; not yet confirmed by %s (they follow within seconds)", strings.Join(st.Unconfirmed, ", "))
		}
		return a.print(st, nil, [][]string{{line}})
	}}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the state)")
	return cmd
}

func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{Use: "health", Short: "The federation's health: services, regions, agents (exit 1 unless healthy)", Args: nArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			h, err := a.publicClient().Health(ctx)
			if err != nil {
				return err
			}
			var rows [][]string
			add := func(kind string, m map[string]fedsync.Component) {
				names := make([]string, 0, len(m))
				for n := range m {
					names = append(names, n)
				}
				sort.Strings(names)
				for _, n := range names {
					rows = append(rows, []string{kind, n, m[n].Status, fmt.Sprintf("%d/%d", m[n].HealthyInstances, m[n].Instances)})
				}
			}
			add("service", h.Services)
			add("region", h.Regions)
			rows = append(rows, []string{"agents", "", "", fmt.Sprintf("%d healthy, %d silent", h.Agents.Healthy, h.Agents.Unhealthy)})
			for _, i := range h.Issues {
				rows = append(rows, []string{"issue", i.Kind, "", i.Message})
			}
			rows = append(rows, []string{"federation", "", h.Status, ""})
			if err := a.print(h, []string{"KIND", "NAME", "STATUS", "HEALTHY"}, rows); err != nil {
				return err
			}
			if h.Status != "healthy" {
				return &exitError{code: exitFailed, err: fmt.Errorf("the federation is %s", h.Status)}
			}
			return nil
		}}
}

func (a *app) auditCmd() *cobra.Command {
	cmd := group("audit", "Audit logs")
	cmd.AddCommand(&cobra.Command{
		Use:   "verify FILE...",
		Short: "Check audit logs' hash chains; names the first bad record",
		Long: `verify checks each audit log's hash chain (and its .head file when present)
and names the first edited, removed, reordered or cut-off record. Give the
active file (audit.log): its rotated segments (audit.<first seq>.log beside it)
are verified with it as one chain, a missing segment is a gap, and segments
deleted past -audit.retention are accounted for by audit.log.base. Exit status
1 when any log is broken.`,
		Args: minArgs(1, "at least one FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if code := auditVerify(a, args); code != 0 {
				return &exitError{code: code, err: errors.New("an audit log is broken")}
			}
			return nil
		},
	})
	return cmd
}

func (a *app) tlsCmd() *cobra.Command {
	cmd := group("tls", "Development certificates for mutual TLS between services")
	cmd.AddCommand(&cobra.Command{
		Use:   "issue DIR SERVICE...",
		Short: "Open (or create) the development CA in DIR and issue each SERVICE a certificate",
		Long: `issue opens the development CA in DIR (ca.pem, ca-key.pem), creating it when
absent or about to expire, and issues each SERVICE a certificate for mutual TLS
between services (DIR/SERVICE.pem, DIR/SERVICE-key.pem: URI SAN
spiffe://fedsync/SERVICE, server and client auth, 90 days). Valid certificates
are kept, so running it again changes nothing. Prints the files per service.
For development and small installs: DIR holds the CA's key.`,
		Args: minArgs(2, "DIR and at least one SERVICE"),
		RunE: func(_ *cobra.Command, args []string) error {
			return tlsIssue(a, args[0], args[1:])
		},
	})
	return cmd
}

func (a *app) atRestCmd() *cobra.Command {
	cmd := group("at-rest", "Keys that seal the statestore's and authn's data on disk (AES-256-GCM)")
	var id string
	var activate bool
	add := &cobra.Command{
		Use:   "add-key FILE",
		Short: "Add a new random key to a key file (creating it), optionally making it the active one",
		Long: `add-key adds a new random 256-bit key named --id to the at-rest key file FILE
({"active":"ID","keys":{"ID":"<base64>"}}), creating the file with the key
active when it does not exist. Rotation is two steps, each a change of the
Secret every replica of the service mounts: add the key (every replica can
then read what it seals), then --activate it (new data is sealed with it and
the replicas re-seal the rest in the background). Remove the old key from the
file once fedsync_at_rest_references{key="old"} is 0 on every replica; a
replica refuses a key file that drops a key it still uses.`,
		Args: nArgs("FILE"),
		RunE: func(_ *cobra.Command, args []string) error { return atRestAddKey(a, args[0], id, activate) },
	}
	add.Flags().StringVar(&id, "id", "", "the new key's id (default: k<unix time>)")
	add.Flags().BoolVar(&activate, "activate", false, "make the new key the active one")
	cmd.AddCommand(add)
	return cmd
}

// group is a command that only holds subcommands: without one, or with an
// unknown one, it is a usage error.
func group(use, short string) *cobra.Command {
	return &cobra.Command{Use: use, Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unknown command %q for %s", args[0], cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr("%s needs a subcommand", cmd.CommandPath())
		}}
}
