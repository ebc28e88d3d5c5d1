// Command merge runs fedsync's merge service.
package main

import (
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/services/merge"
)

func main() { svcrun.Main("merge", merge.ParseConfig, merge.Run) }
