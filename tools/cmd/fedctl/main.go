// Command fedctl is fedsync's operator tool.
//
//	fedctl audit verify FILE...   check audit logs' hash chains; names the first bad record
package main

import (
	"fmt"
	"os"

	"github.com/fedsync/fedsync/libs/audit"
)

const usage = `usage: fedctl audit verify FILE...

  audit verify   checks each audit log's hash chain (and its .head file when
                 present) and names the first edited, removed, reordered or
                 cut-off record. Exit status 1 when any log is broken.`

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) < 3 || args[0] != "audit" || args[1] != "verify" {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	status := 0
	for _, path := range args[2:] {
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
