// Command watchtower is GoWatchtower's command line. Its kafka commands read the gateway's
// topics (docs/kafka.md):
//
//	watchtower kafka tail  [flags]   print slow and failed reconciles as they arrive
//	watchtower kafka stats [flags]   reconciles per controller, and a consumer group's lag
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `watchtower: GoWatchtower's command line

  watchtower kafka tail  [flags]   print slow and failed reconciles from the spans topic as they arrive
  watchtower kafka stats [flags]   reconciles per controller over an interval, and a consumer group's lag

Run a command with -h for its flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "kafka" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[1] {
	case "tail":
		err = tail(ctx, args[2:], stdout, stderr)
	case "stats":
		err = stats(ctx, args[2:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "watchtower: unknown command %q\n\n%s", "kafka "+args[1], usage)
		return 2
	}
	if err != nil {
		if err == errUsage {
			return 2
		}
		fmt.Fprintln(stderr, "watchtower:", err)
		return 1
	}
	return 0
}
