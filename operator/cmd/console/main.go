// Command watchtower-console serves the Watchtower console (docs/console.md): the operators'
// controllers, their slow and failed reconciles, each reconcile's trace, the pipeline's health
// and its configuration, in a browser, on one port. The Watchtower operator's image runs the
// same program as `/manager console`.
package main

import (
	"os"

	"github.com/gowatchtower/watchtower/operator/internal/console"
)

func main() { os.Exit(console.Main("watchtower-console", os.Args[1:])) }
