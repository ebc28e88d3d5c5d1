// Command authn runs fedsync's authn service.
package main

import (
	"github.com/fedsync/fedsync/libs/svcrun"
	"github.com/fedsync/fedsync/services/authn"
)

func main() { svcrun.Main("authn", authn.ParseConfig, authn.Run) }
