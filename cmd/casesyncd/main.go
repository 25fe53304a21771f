// Command casesyncd is casesync's sync server.
//
//	casesyncd [serve] [--addr 127.0.0.1:8420] [--data ./casesync-data] [--tls-cert F --tls-key F]
//	casesyncd admin [--server URL] [--token-file F] [--json] COMMAND ...
//
// Flags have environment overrides: CASESYNC_ADDR, CASESYNC_DATA,
// CASESYNC_TLS_CERT, CASESYNC_TLS_KEY, CASESYNC_LOG_LEVEL, CASESYNC_SERVER,
// CASESYNC_ADMIN_TOKEN_FILE.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "casesyncd:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `casesyncd — casesync's sync server

Usage:
  casesyncd [serve] [flags]        run the server (the default)
  casesyncd admin [flags] COMMAND  manage users and devices of a running server

Run 'casesyncd serve -h' or 'casesyncd admin -h' for their flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "admin" || args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
			fmt.Fprintf(stderr, "casesyncd: unknown command %q\n\n%s", args[0], usage)
			return errUsage
		}
		return serve(ctx, args, stderr)
	case "admin":
		return admin(ctx, args, stdout, stderr)
	default:
		fmt.Fprint(stdout, usage)
		return nil
	}
}

// envOr returns the environment variable's value, or def if it is unset.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// parse parses flags that may stand before, between or after positional
// arguments ("user add NAME --role lead"), and returns the positionals.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage // the flag package has printed the problem and the usage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
