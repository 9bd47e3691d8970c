// Command tern is Tern's one binary: the gateway (serve), token minting
// (token), a command-line client (send, sync, listen, group, block) and the
// benchmark suite (bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `tern — QUIC edge gateway for mobile messaging

Usage:
  tern serve  [--data DIR] [--listen HOST:PORT] [--http HOST:PORT] [--config FILE] ...
  tern token  --data DIR --user U --device D [--ttl DUR]
  tern send   --addr HOST:PORT --ca FILE --token T (--to USER | --group G) TEXT
  tern sync   --addr HOST:PORT --ca FILE --token T
  tern listen --addr HOST:PORT --ca FILE --token T
  tern group  --addr HOST:PORT --ca FILE --token T (create|add|remove|members) GROUP [USER...]
  tern block  --addr HOST:PORT --ca FILE --token T [--unblock] USER
  tern bench  (throughput|latency|connections|reconnect-storm|mobile) [--addr HOST:PORT --ca FILE --data DIR] [--json] [--report FILE.html] [--runs K] ...
  tern version

Run 'tern COMMAND -h' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tern:", err)
		}
		os.Exit(exitCode(err))
	}
}

// run dispatches a command line. It is main without the process around it,
// so tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, stdout, stderr)
	case "token":
		return cmdToken(rest, stdout, stderr)
	case "send":
		return cmdSend(ctx, rest, stdout, stderr)
	case "sync":
		return cmdSync(ctx, rest, stdout, stderr, false)
	case "listen":
		return cmdSync(ctx, rest, stdout, stderr, true)
	case "group":
		return cmdGroup(ctx, rest, stdout, stderr)
	case "block":
		return cmdBlock(ctx, rest, stdout, stderr)
	case "bench":
		return cmdBench(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "tern", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

// exitCode is 2 for usage errors, 1 otherwise.
func exitCode(err error) int {
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }
