// Command casesync is the caseworker's command-line client: it captures
// cases and notes offline in an encrypted local replica and syncs them with
// casesyncd.
//
//	casesync [--dir D] [--json] [--key-file F] COMMAND ...
//
// The replica lives in --dir (env CASESYNC_DIR; default: the OS user config
// directory's casesync folder). It is encrypted with a passphrase, read
// from CASESYNC_PASSPHRASE or asked for on the terminal, or with a key
// file (--key-file, env CASESYNC_KEY_FILE).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/casesync/casesync/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	var re *client.RevokedError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.As(err, &re):
		fmt.Fprintln(os.Stderr, "casesync:", revokedMessage(re))
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "casesync:", err)
		os.Exit(1)
	}
}

// revokedMessage tells the user, in any command after the wipe as in the
// one that made it, what revocation took and what to do next.
func revokedMessage(re *client.RevokedError) string {
	when := ""
	if !re.At.IsZero() {
		when = " on " + re.At.Local().Format("2006-01-02 15:04")
	}
	return fmt.Sprintf("this device was revoked by the office; its local data was wiped%s (%s). "+
		"To use this laptop again, ask for a new device token and run 'casesync enroll --server URL --token T'", when, re.Counts())
}

var errUsage = errors.New("usage")

const usage = `casesync — capture cases and notes offline, sync them with casesyncd

Usage: casesync [--dir D] [--json] [--key-file F] COMMAND

Commands:
  enroll --server URL --token T      bind this device to a server (token from 'casesyncd admin device enroll')
  case add --area A --title T [--tenant N] [--address A] [--set k=v]...   prints the new case ID
  case set ID k=v...                 change fields of a case (area=... moves it)
  note add CASE --kind K [--text T]  kinds: visit call office_hours letter referral team_meeting note;
                                     text from stdin when --text is omitted
  note set ID k=v...                 edit your own note
  note delete ID                     delete your own note
  cases [--area A] [--status S] [--search Q]
  show ID                            a case with its journal, or one note
  sync                               one sync round
  run                                sync in the background until interrupted
  status                             connection, pending changes, conflicts, rejected changes
  conflicts                          fields edited concurrently, with their value IDs
  resolve ID FIELD (--value V | --keep VALUE_ID)
  rejected                           changes the server refused, with the reason
  rejected dismiss SEQ               forget a rejected change once dealt with

Environment: CASESYNC_DIR, CASESYNC_PASSPHRASE, CASESYNC_KEY_FILE.
`

// env is what a command runs with.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	json   bool
	dir    string
	opts   client.Options
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func defaultDir() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "casesync")
	}
	return ".casesync"
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("casesync", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	e := &env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	fs.StringVar(&e.dir, "dir", envOr("CASESYNC_DIR", defaultDir()), "replica directory (env CASESYNC_DIR)")
	fs.BoolVar(&e.json, "json", false, "print JSON")
	keyFile := fs.String("key-file", envOr("CASESYNC_KEY_FILE", ""), "key file instead of a passphrase (env CASESYNC_KEY_FILE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return errUsage
	}
	e.opts.KeyFile = *keyFile
	// 'casesync run' holds the replica only during each transaction, but
	// a large pull applies in seconds: wait rather than fail.
	e.opts.LockTimeout = 15 * time.Second
	cmd, rest := rest[0], rest[1:]
	if len(rest) > 0 && (cmd == "case" || cmd == "note" || (cmd == "rejected" && rest[0] == "dismiss")) {
		cmd, rest = cmd+" "+rest[0], rest[1:]
	}
	h, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "casesync: unknown command %q\n\n", cmd)
		fs.Usage()
		return errUsage
	}
	return h(e, rest)
}

// open opens the replica, asking for the passphrase on a terminal when
// neither CASESYNC_PASSPHRASE nor a key file is given.
func (e *env) open() (*client.Client, error) {
	o := e.opts
	if o.KeyFile == "" {
		o.Passphrase = os.Getenv("CASESYNC_PASSPHRASE")
		if o.Passphrase == "" {
			if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				fmt.Fprint(e.stderr, "casesync passphrase: ")
				b, err := term.ReadPassword(int(f.Fd()))
				fmt.Fprintln(e.stderr)
				if err != nil {
					return nil, fmt.Errorf("read passphrase: %w", err)
				}
				o.Passphrase = string(b)
			}
		}
	}
	return client.Open(e.dir, &o)
}
