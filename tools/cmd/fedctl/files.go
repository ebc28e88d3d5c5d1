package main

import (
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/mtls"
)

func auditVerify(a *app, paths []string) int {
	status := 0
	for _, path := range paths {
		n, err := audit.VerifyFile(path)
		if err != nil {
			fmt.Fprintf(a.stdout, "%s: BROKEN after %d good records: %v\n", path, n, err)
			status = exitFailed
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

// jsonLine renders v as one line of JSON.
func jsonLine(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
