//go:build unix

// The tests in this package run the real casesyncd: TestMain builds the
// binary once, and every test execs it on a free loopback port with a data
// directory of its own, talks to it over real sockets (HTTP, WebSocket, the
// admin CLI as a separate process) and signals it like an operator or a
// crash would.
package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

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
	bin = filepath.Join(dir, "casesyncd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "casesyncd tests: go build:", err)
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
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CASESYNC_") && !strings.HasPrefix(kv, "GORACE=") {
			env = append(env, kv)
		}
	}
	return append(env, "GORACE=atexit_sleep_ms=0")
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon is a running casesyncd.
type daemon struct {
	cmd  *exec.Cmd
	Addr string // host:port it was told to listen on
	URL  string // http://Addr
	WS   string // ws://Addr/v1/sync
	Data string // its data directory
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, once done is closed
}

// launch starts casesyncd with args and extra environment in working
// directory dir (a new temporary directory if empty), without waiting for
// it. addr and data are what the test expects it to use. The process is
// killed when the test ends if it is still running.
func launch(t *testing.T, dir, addr, data string, env []string, args ...string) *daemon {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	d := &daemon{
		cmd: cmd, Addr: addr, URL: "http://" + addr, WS: "ws://" + addr + "/v1/sync", Data: data,
		out: &lockedBuffer{}, done: make(chan struct{}),
	}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start casesyncd: %v", err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = cmd.Process.Kill()
			<-d.done
		}
		out := d.Output()
		if strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("casesyncd (%v) reported a data race:\n%s", args, out)
		} else if t.Failed() {
			t.Logf("casesyncd %v output:\n%s", args, out)
		}
	})
	return d
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

// Output returns everything the process wrote to stdout and stderr.
func (d *daemon) Output() string { return d.out.String() }

// TokenFile is the admin token file in the data directory.
func (d *daemon) TokenFile() string { return filepath.Join(d.Data, "admin.token") }

// waitReady polls /readyz until it answers 200, and fails the test if the
// process exits first or the deadline passes.
func (d *daemon) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := httpc.Get(d.URL + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("casesyncd at %s not ready after 20 s: %v\n%s", d.URL, err, d.Output())
		}
		select {
		case <-d.done:
			t.Fatalf("casesyncd exited before it was ready: %v\n%s", d.err, d.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test if the process is still running.
func (d *daemon) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("casesyncd still running %s later\n%s", timeout, d.Output())
	}
	return exitCode(t, d.err)
}

// signal sends sig to the process.
func (d *daemon) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// kill9 kills the process with SIGKILL and waits until it is gone.
func (d *daemon) kill9(t *testing.T) {
	t.Helper()
	d.signal(t, syscall.SIGKILL)
	<-d.done
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("casesyncd exited %d after SIGTERM, want 0\n%s", code, d.Output())
	}
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("process: %v", err)
	return -1
}

// result is what a short-lived casesyncd invocation did.
type result struct {
	stdout, stderr string
	code           int
}

// runIn runs casesyncd to completion in directory dir (a new temporary one
// if empty) with extra environment.
func runIn(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("casesyncd %v did not finish in 60 s", args)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String(), code: exitCode(t, err)}
	if strings.Contains(r.stderr, "WARNING: DATA RACE") {
		t.Errorf("casesyncd %v reported a data race:\n%s", args, r.stderr)
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
	if r.code != 0 {
		t.Fatalf("casesyncd admin %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
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
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
		t.Fatalf("device enroll --json: %v\n%s", err, r.stdout)
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
