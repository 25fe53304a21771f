//go:build unix

// The tests in this package run the real casesyncd: TestMain builds the
// binary once, and every test execs it on a free loopback port with a data
// directory of its own, talks to it over real sockets (HTTP, WebSocket, the
// admin CLI as a separate process) and signals it like an operator or a
// crash would.
package main_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/casesync/casesync/internal/testbin"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// bin is the casesyncd binary TestMain built.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "casesyncd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "casesyncd tests:", err)
		os.Exit(1)
	}
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	bin, err = testbin.Build(dir, "github.com/casesync/casesync/cmd/casesyncd", flags...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "casesyncd tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// httpc never keeps connections alive, so no transport goroutine outlives
// a test (goleak) and no request reuses a connection to a killed server.
var httpc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// cleanEnv is the test process's environment without CASESYNC_ variables,
// so that a developer's settings cannot change what a test runs. A
// race-enabled casesyncd does not linger a second at exit.
func cleanEnv() []string {
	return testbin.CleanEnv([]string{"CASESYNC_", "GORACE="}, "GORACE=atexit_sleep_ms=0")
}

// daemon is a running casesyncd: its testbin.Proc (Output, Done, Err, ...)
// and where it serves.
type daemon struct {
	*testbin.Proc
	Addr string // host:port it was told to listen on
	URL  string // http://Addr
	WS   string // ws://Addr/v1/sync
	Data string // its data directory
}

// launch starts casesyncd with args and extra environment in working
// directory dir (a new temporary directory if empty), without waiting for
// it. addr and data are what the test expects it to use. The process is
// killed when the test ends if it is still running, and a data race it
// reports fails the test.
func launch(t *testing.T, dir, addr, data string, env []string, args ...string) *daemon {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := testbin.Start(t, fmt.Sprintf("casesyncd %v", args), testbin.Cmd{Path: bin, Args: args, Env: append(cleanEnv(), env...), Dir: dir})
	t.Cleanup(func() { // before testbin's cleanup, which logs the output if the test failed
		p.Kill()
		if out := p.Output(); strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", p.Name(), out)
		}
	})
	return &daemon{Proc: p, Addr: addr, URL: "http://" + addr, WS: "ws://" + addr + "/v1/sync", Data: data}
}

// start runs casesyncd --addr A --data data on a free port, plus extra
// arguments, and waits until it is ready.
func start(t *testing.T, data string, extra ...string) *daemon {
	t.Helper()
	return startAt(t, freeAddr(t), data, extra...)
}

// startAt is start on a given address, to restart on the same one.
func startAt(t *testing.T, addr, data string, extra ...string) *daemon {
	t.Helper()
	d := launch(t, "", addr, data, nil, append([]string{"--addr", addr, "--data", data}, extra...)...)
	d.waitReady(t)
	return d
}

// TokenFile is the admin token file in the data directory.
func (d *daemon) TokenFile() string { return filepath.Join(d.Data, "admin.token") }

// waitReady polls /readyz until it answers 200, and fails the test if the
// process exits first or the deadline passes.
func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	err := d.WaitFor(20*time.Second, func() error { return testbin.Ready(httpc, d.URL+"/readyz") })
	if err != nil {
		t.Fatalf("casesyncd at %s not ready: %v\n%s", d.URL, err, d.Output())
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test if the process is still running.
func (d *daemon) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.Done():
	case <-time.After(timeout):
		t.Fatalf("casesyncd still running %s later\n%s", timeout, d.Output())
	}
	return testbin.MustExitCode(t, d.Err())
}

// running fails the test if the process has exited before the test sends
// it sig.
func (d *daemon) running(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if d.Exited() {
		t.Fatalf("signal %v: casesyncd has already exited (%v)\n%s", sig, d.Err(), d.Output())
	}
}

// sigterm sends SIGTERM and returns without waiting for the exit (wait
// does that). testbin's Stop signals and then waits, so it runs on a
// goroutine of its own, with a timeout no test waits as long for; the
// process is killed when the test ends at the latest, which ends it.
func (d *daemon) sigterm(t *testing.T) {
	t.Helper()
	d.running(t, syscall.SIGTERM)
	go d.Stop(10 * time.Minute)
}

// kill9 kills the process with SIGKILL and waits until it is gone.
func (d *daemon) kill9(t *testing.T) {
	t.Helper()
	d.running(t, syscall.SIGKILL)
	d.Kill()
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.running(t, syscall.SIGTERM)
	code, err := d.Stop(30 * time.Second)
	if err != nil {
		t.Fatalf("casesyncd after SIGTERM: %v\n%s", err, d.Output())
	}
	if code != 0 {
		t.Fatalf("casesyncd exited %d after SIGTERM, want 0\n%s", code, d.Output())
	}
}

// result is what a short-lived casesyncd invocation did.
type result = testbin.Result

// runIn runs casesyncd to completion in directory dir (a new temporary one
// if empty) with extra environment. It fails the test if casesyncd did not
// finish in 60 s (or was killed, or did not start: testbin.Run's exit code
// -1).
func runIn(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	r := testbin.Run(60*time.Second, testbin.Cmd{Path: bin, Args: args, Env: append(cleanEnv(), env...), Dir: dir})
	if r.Code == -1 {
		t.Fatalf("casesyncd %v did not finish in 60 s\n%v", args, r)
	}
	if strings.Contains(r.Stderr, "WARNING: DATA RACE") {
		t.Errorf("casesyncd %v reported a data race:\n%s", args, r.Stderr)
	}
	return r
}

// admin runs casesyncd admin against d with d's token file.
func (d *daemon) admin(t *testing.T, args ...string) result {
	t.Helper()
	return runIn(t, "", nil, append([]string{"admin", "--server", d.URL, "--token-file", d.TokenFile()}, args...)...)
}

// mustAdmin runs casesyncd admin and fails the test unless it exits 0.
func (d *daemon) mustAdmin(t *testing.T, args ...string) result {
	t.Helper()
	r := d.admin(t, args...)
	if r.Code != 0 {
		t.Fatalf("casesyncd admin %v: exit %d\nstdout: %s\nstderr: %s", args, r.Code, r.Stdout, r.Stderr)
	}
	return r
}

// enrollment is the JSON of `device enroll --json`.
type enrollment struct {
	Device struct {
		ID   string `json:"id"`
		User string `json:"user"`
	} `json:"device"`
	Token string `json:"token"`
}

// enroll enrolls a device for user with the admin CLI and returns its ID
// and token.
func (d *daemon) enroll(t *testing.T, user, label string) (id, token string) {
	t.Helper()
	r := d.mustAdmin(t, "device", "enroll", user, "--label", label, "--json")
	var e enrollment
	if err := json.Unmarshal([]byte(r.Stdout), &e); err != nil {
		t.Fatalf("device enroll --json: %v\n%s", err, r.Stdout)
	}
	if e.Device.ID == "" || !strings.HasPrefix(e.Token, "cs_") || e.Device.User != user {
		t.Fatalf("device enroll --json = %+v", e)
	}
	return e.Device.ID, e.Token
}

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := httpc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// metric returns the value of one series (name plus labels exactly as
// exposed, e.g. `casesync_changes_total{result="accepted"}`) from a
// Prometheus text exposition.
func metric(body, series string) (float64, bool) {
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// Protocol helpers, built like server_test.go's.

func raw(s string) json.RawMessage { return json.RawMessage(s) }

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// newCase returns a change creating a case.
func newCase(seq uint64, clock *syncproto.Clock, id, area, tenant string) syncproto.Change {
	return syncproto.Edit(nil, syncproto.Cases, id, seq, clock.Now(), map[string]json.RawMessage{
		"title": jsonString("Case " + id), "area": jsonString(area), "status": raw(`"open"`), "tenant": jsonString(tenant),
	})
}

// newEntry returns a change adding a visit note to a case.
func newEntry(seq uint64, clock *syncproto.Clock, id, caseID, author, text string) syncproto.Change {
	return syncproto.Edit(nil, syncproto.Entries, id, seq, clock.Now(), map[string]json.RawMessage{
		"case_id": jsonString(caseID), "kind": raw(`"visit"`), "author": jsonString(author),
		"occurred_at": raw(`"2026-11-28"`), "text": jsonString(text),
	})
}

// push sends changes and waits for their ack (main test goroutine only:
// it fails the test on errors).
func push(t *testing.T, c *servertest.Conn, changes ...syncproto.Change) *syncproto.Ack {
	t.Helper()
	c.Send(&syncproto.Push{Changes: changes})
	ack, _ := servertest.Until[*syncproto.Ack](c)
	return ack
}

// pullAll connects with a fresh checkpoint, reads up to caught_up and
// returns every record sent, with how often each key was sent, and the log
// head the welcome reported.
func pullAll(t *testing.T, ws, device, token string) (map[syncproto.Key]syncproto.Record, map[syncproto.Key]int, uint64) {
	t.Helper()
	c, w := servertest.Handshake(t, ws, device, token, nil)
	defer c.Close()
	_, before := servertest.Until[*syncproto.CaughtUp](c)
	recs := map[syncproto.Key]syncproto.Record{}
	seen := map[syncproto.Key]int{}
	for _, m := range before {
		ch, ok := m.(*syncproto.Changes)
		if !ok {
			continue
		}
		for _, r := range ch.Records {
			recs[r.Key()] = r
			seen[r.Key()]++
		}
		for _, e := range ch.Evicted {
			delete(recs, e.Key())
		}
	}
	return recs, seen, w.Seq
}
