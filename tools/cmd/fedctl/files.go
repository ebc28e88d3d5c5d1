package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"time"

	"github.com/fedsync/fedsync/libs/atrest"
	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/mtls"
)

func auditVerify(a *app, paths []string) int {
	status := 0
	for _, path := range paths {
		n, files, err := audit.VerifyLog(path)
		if err != nil {
			fmt.Fprintf(a.stdout, "%s: BROKEN after %d good records: %v\n", path, n, err)
			status = exitFailed
			continue
		}
		if files > 1 {
			fmt.Fprintf(a.stdout, "%s: ok, %d records in %d segments and the active file, one chain\n", path, n, files-1)
			continue
		}
		fmt.Fprintf(a.stdout, "%s: ok, %d records\n", path, n)
	}
	return status
}

// serviceName is what a certificate may name: it becomes a file name and the
// path of spiffe://fedsync/<service>.
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func tlsIssue(a *app, dir string, services []string) error {
	for _, s := range services {
		if !serviceName.MatchString(s) {
			return usageErr("%q is not a service name (lower-case letters, digits and dashes)", s)
		}
	}
	ca, err := mtls.OpenDevCA(dir)
	if err != nil {
		return fmt.Errorf("open CA in %s: %w", dir, err)
	}
	for _, s := range services {
		cfg, err := ca.Issue(s)
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		fmt.Fprintf(a.stdout, "%s: ca=%s cert=%s key=%s uri=%s%s\n", s, cfg.CA, cfg.Cert, cfg.Key, mtls.URIPrefix, s)
	}
	return nil
}

// atRestAddKey adds a new key to the at-rest key file path (see atRestCmd).
func atRestAddKey(a *app, path, id string, activate bool) error {
	if id == "" {
		id = fmt.Sprintf("k%d", time.Now().Unix())
	}
	f := atrest.KeyFile{Keys: map[string]string{}}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		activate = true // a new file's only key
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(raw, &f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if _, ok := f.Keys[id]; ok {
		return usageErr("%s already holds a key %q", path, id)
	}
	k := atrest.NewKeyFile(id)
	f.Keys[id] = k.Keys[id]
	if activate {
		f.Active = id
	}
	out, _ := json.MarshalIndent(f, "", "  ")
	if _, _, err := atrest.StaticSource(out).Keys(); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%s: added key %s; active key %s; keys %d\n", path, id, f.Active, len(f.Keys))
	return nil
}

// jsonLine renders v as one line of JSON.
func jsonLine(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
