// Command statestore runs fedsync's statestore service.
package main

import (
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/services/statestore"
)

func main() { svcrun.Main("statestore", statestore.ParseConfig, statestore.Run) }
