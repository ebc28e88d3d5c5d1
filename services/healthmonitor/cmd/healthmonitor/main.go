// Command healthmonitor runs fedsync's healthmonitor service.
package main

import (
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/services/healthmonitor"
)

func main() { svcrun.Main("healthmonitor", healthmonitor.ParseConfig, healthmonitor.Run) }
