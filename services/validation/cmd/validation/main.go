// Command validation runs fedsync's validation service.
package main

import (
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/services/validation"
)

func main() { svcrun.Main("validation", validation.ParseConfig, validation.Run) }
