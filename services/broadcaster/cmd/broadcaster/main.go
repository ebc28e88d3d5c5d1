// Command broadcaster runs fedsync's broadcaster service.
package main

import (
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/services/broadcaster"
)

func main() { svcrun.Main("broadcaster", broadcaster.ParseConfig, broadcaster.Run) }
