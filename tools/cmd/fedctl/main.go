// Command fedctl is fedsync's operator tool.
//
//	fedctl audit verify FILE...      check audit logs' hash chains; names the first bad record
//	fedctl tls issue DIR SERVICE...  development CA in DIR and a mutual-TLS certificate per service
package main

import (
	"fmt"
	"os"
	"regexp"

	"github.com/fedsync/fedsync/libs/audit"
	"github.com/fedsync/fedsync/libs/mtls"
)

const usage = `usage: fedctl audit verify FILE...
       fedctl tls issue DIR SERVICE...

  audit verify   checks each audit log's hash chain (and its .head file when
                 present) and names the first edited, removed, reordered or
                 cut-off record. Exit status 1 when any log is broken.

  tls issue      opens the development CA in DIR (ca.pem, ca-key.pem), creating
                 it when absent or about to expire, and issues each SERVICE a
                 certificate for mutual TLS between services (DIR/SERVICE.pem,
                 DIR/SERVICE-key.pem: URI SAN spiffe://fedsync/SERVICE, server
                 and client auth, 90 days). Valid certificates are kept, so
                 running it again changes nothing. Prints the files per service.
                 For development and small installs: DIR holds the CA's key.`

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	switch {
	case len(args) >= 3 && args[0] == "audit" && args[1] == "verify":
		return auditVerify(args[2:])
	case len(args) >= 4 && args[0] == "tls" && args[1] == "issue":
		return tlsIssue(args[2], args[3:])
	}
	fmt.Fprintln(os.Stderr, usage)
	return 2
}

func auditVerify(paths []string) int {
	status := 0
	for _, path := range paths {
		n, err := audit.VerifyFile(path)
		if err != nil {
			fmt.Printf("%s: BROKEN after %d good records: %v\n", path, n, err)
			status = 1
			continue
		}
		fmt.Printf("%s: ok, %d records\n", path, n)
	}
	return status
}

// serviceName is what a certificate may name: it becomes a file name and the
// path of spiffe://fedsync/<service>.
var serviceName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func tlsIssue(dir string, services []string) int {
	for _, s := range services {
		if !serviceName.MatchString(s) {
			fmt.Fprintf(os.Stderr, "fedctl tls issue: %q is not a service name (lower-case letters, digits and dashes)\n", s)
			return 2
		}
	}
	ca, err := mtls.OpenDevCA(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fedctl tls issue: open CA in %s: %v\n", dir, err)
		return 1
	}
	for _, s := range services {
		cfg, err := ca.Issue(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fedctl tls issue: %s: %v\n", s, err)
			return 1
		}
		fmt.Printf("%s: ca=%s cert=%s key=%s uri=%s%s\n", s, cfg.CA, cfg.Cert, cfg.Key, mtls.URIPrefix, s)
	}
	return 0
}
