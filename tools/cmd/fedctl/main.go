// Command fedctl is fedsync's command line for people: log in, read and write
// documents, watch changes live, work the review queue, administer clients
// and keys, pause and resume the federation, read its health, verify audit
// logs and issue development certificates. `fedctl help` lists the commands,
// `fedctl completion bash|zsh|fish|powershell` prints shell completion.
//
// Exit status: 0 done; 1 the operation failed; 2 usage; 3 not logged in or
// the token was refused; 4 permission denied; 5 not found; 6 version
// conflict; 7 unavailable or rate limited (try again later).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	fedsync "github.com/fedsync/fedsync/sdk/go"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitAuth        = 3
	exitDenied      = 4
	exitNotFound    = 5
	exitConflict    = 6
	exitUnavailable = 7
)

func main() { os.Exit(run(os.Args[1:])) }

// exitError carries an exit status and a hint of what to do.
type exitError struct {
	code int
	err  error
	hint string
}

func (e *exitError) Error() string { return e.err.Error() }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// run executes fedctl with args and returns the exit status.
func run(args []string) int { return runIO(args, os.Stdout, os.Stderr) }

func runIO(args []string, stdout, stderr io.Writer) int {
	app := &app{stdout: stdout, stderr: stderr}
	root := app.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	code, hint := classify(err)
	fmt.Fprintf(stderr, "fedctl: %v\n", err)
	if hint != "" {
		fmt.Fprintf(stderr, "  %s\n", hint)
	}
	if code == exitUsage && hint == "" {
		fmt.Fprintln(stderr, "  run fedctl help, or fedctl COMMAND --help, for the commands and their flags")
	}
	return code
}

// classify maps an error to an exit status and a hint.
func classify(err error) (int, string) {
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.code == exitAuth && ee.hint == "" {
			return ee.code, "log in with: fedctl login --client-id ID (secret from --secret-stdin or $FEDSYNC_CLIENT_SECRET)"
		}
		return ee.code, ee.hint
	}
	switch fedsync.CodeOf(err) {
	case fedsync.CodeUnauthenticated, fedsync.CodeInvalidClient:
		return exitAuth, "log in again with: fedctl login --client-id ID"
	case fedsync.CodePermissionDenied:
		return exitDenied, "this needs a client of a higher level; fedctl login with one"
	case fedsync.CodeNotFound:
		return exitNotFound, ""
	case fedsync.CodeVersionConflict:
		return exitConflict, "read the document again (fedctl get) and retry with its version"
	case fedsync.CodeUnavailable, fedsync.CodeRateLimited:
		return exitUnavailable, "nothing was applied; try again later (fedctl health shows what is down)"
	case fedsync.CodeInvalidArgument, fedsync.CodeTooLarge:
		return exitFailed, ""
	}
	return exitFailed, ""
}
