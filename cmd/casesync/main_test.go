//go:build unix

// The tests in this package run the real casesync CLI: TestMain builds the
// binary once, and every test execs it as a caseworker would, one process
// per command, with CASESYNC_DIR and CASESYNC_PASSPHRASE set, against a real
// server (servertest, real TCP on loopback). Other devices are library
// clients or raw protocol connections in the test process.
package main_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/internal/testbin"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// bin is the casesync binary TestMain built.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "casesync-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "casesync tests:", err)
		os.Exit(1)
	}
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	bin, err = testbin.Build(dir, "github.com/casesync/casesync/cmd/casesync", flags...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "casesync tests:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.Cleanup(func(code int) {
			os.RemoveAll(dir)
			os.Exit(code)
		}))
}

// passphrase unlocks every CLI replica in these tests.
const passphrase = "Kanaalstraat 12, derde etage"

// cheapKDF keeps library replicas (and CLI replicas they create) fast to
// open; CLI-created replicas use the default Argon2id cost.
var cheapKDF = client.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

// cleanEnv is the test process's environment without CASESYNC_ variables,
// so a developer's settings cannot change what a test runs. A race-enabled
// casesync does not linger a second at exit.
func cleanEnv() []string {
	return testbin.CleanEnv([]string{"CASESYNC_", "GORACE="}, "GORACE=atexit_sleep_ms=0")
}

// failOnRace fails the test if what, a race-enabled casesync, reported a
// data race in out.
func failOnRace(t *testing.T, what, out string) {
	t.Helper()
	if strings.Contains(out, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", what, out)
	}
}

// device is one caseworker's laptop running the CLI: a replica directory.
type device struct {
	t   *testing.T
	dir string // CASESYNC_DIR
}

func newDevice(t *testing.T) *device {
	t.Helper()
	return &device{t: t, dir: t.TempDir()}
}

// DB is the replica's bbolt file.
func (d *device) DB() string { return filepath.Join(d.dir, client.StoreFile) }

func (d *device) env() []string {
	return append(cleanEnv(), "CASESYNC_DIR="+d.dir, "CASESYNC_PASSPHRASE="+passphrase)
}

// cmd is casesync ARGS on this device.
func (d *device) cmd(args ...string) testbin.Cmd {
	return testbin.Cmd{Path: bin, Args: args, Env: d.env(), Dir: d.dir}
}

// result is what one casesync invocation did.
type result = testbin.Result

// runTimeout bounds every casesync run to completion.
const runTimeout = 60 * time.Second

// run runs casesync to completion with stdin (may be nil). Without stdin
// it fails the test if casesync did not finish in runTimeout (or was
// killed, or did not start: testbin.Run's exit code -1).
func (d *device) run(stdin io.Reader, args ...string) result {
	d.t.Helper()
	if stdin != nil {
		return d.runStdin(stdin, args...)
	}
	r := testbin.Run(runTimeout, d.cmd(args...))
	if r.Code == -1 {
		d.t.Fatalf("casesync %v did not finish in %s\n%v", args, runTimeout, r)
	}
	failOnRace(d.t, fmt.Sprintf("casesync %v", args), r.Stderr)
	return r
}

// runStdin is run with stdin, which a testbin.Cmd cannot give: a local
// process (startLocal), waited for up to runTimeout.
func (d *device) runStdin(stdin io.Reader, args ...string) result {
	d.t.Helper()
	began := time.Now()
	p := d.startLocal(stdin, args...)
	code := p.wait(d.t, runTimeout)
	return result{Args: args, Stdout: p.stdout.String(), Stderr: p.stderr.String(), Code: code, Took: time.Since(began)}
}

// must runs casesync and fails the test unless it exits 0.
func (d *device) must(args ...string) result {
	d.t.Helper()
	r := d.run(nil, args...)
	if r.Code != 0 {
		d.t.Fatalf("%v", r)
	}
	return r
}

// mustJSON runs casesync --json ARGS, requires exit 0 and decodes stdout.
func (d *device) mustJSON(out any, args ...string) {
	d.t.Helper()
	r := d.must(append([]string{"--json"}, args...)...)
	if err := json.Unmarshal([]byte(r.Stdout), out); err != nil {
		d.t.Fatalf("decode %v: %v", r, err)
	}
}

// enroll binds the replica to s as user, through the CLI, and returns
// the device ID.
func (d *device) enroll(s *servertest.Server, user string) string {
	d.t.Helper()
	_, tok := s.Enroll(user)
	var st client.Status
	d.mustJSON(&st, "enroll", "--server", s.URL, "--token", tok)
	if !st.Enrolled || st.User != user || st.Device == "" {
		d.t.Fatalf("enroll as %s: status %+v", user, st)
	}
	return st.Device
}

func (d *device) status() client.Status {
	d.t.Helper()
	var st client.Status
	d.mustJSON(&st, "status")
	return st
}

func (d *device) addCase(area, title, tenant string) string {
	d.t.Helper()
	var out struct{ ID string }
	d.mustJSON(&out, "case", "add", "--area", area, "--title", title, "--tenant", tenant)
	if !syncproto.ValidID(out.ID) {
		d.t.Fatalf("case add printed ID %q", out.ID)
	}
	return out.ID
}

// addNote adds a note with --text, or from stdin if stdin is not nil.
func (d *device) addNote(caseID, kind, text string, stdin io.Reader) string {
	d.t.Helper()
	args := []string{"--json", "note", "add", caseID, "--kind", kind}
	if stdin == nil {
		args = append(args, "--text", text)
	}
	r := d.run(stdin, args...)
	if r.Code != 0 {
		d.t.Fatalf("%v", r)
	}
	var out struct{ ID string }
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil || !syncproto.ValidID(out.ID) {
		d.t.Fatalf("note add printed %q (%v)", r.Stdout, err)
	}
	return out.ID
}

func (d *device) sync() client.SyncResult {
	d.t.Helper()
	var res client.SyncResult
	d.mustJSON(&res, "sync")
	return res
}

// shown is `casesync --json show ID` of a case.
type shown struct {
	client.View
	Entries []*client.View `json:"entries"`
}

func (d *device) show(id string) shown {
	d.t.Helper()
	var v shown
	d.mustJSON(&v, "show", id)
	return v
}

func (d *device) cases() []*client.View {
	d.t.Helper()
	var vs []*client.View
	d.mustJSON(&vs, "cases")
	return vs
}

// proc is a casesync process running in the background, stdout and
// stderr in one buffer (Output).
type proc struct{ *testbin.Proc }

// start starts casesync ARGS without waiting for it. It is killed when
// the test ends if still running, and a data race it reports fails the
// test.
func (d *device) start(args ...string) *proc {
	d.t.Helper()
	p := testbin.Start(d.t, fmt.Sprintf("casesync %v", args), d.cmd(args...))
	t := d.t
	t.Cleanup(func() { // before testbin's cleanup, which logs the output if the test failed
		p.Kill()
		failOnRace(t, p.Name(), p.Output())
	})
	return &proc{p}
}

// kill9 kills the process with SIGKILL (if it is still running) and waits
// until it is gone. It reports whether the kill hit a running process.
func (p *proc) kill9(t *testing.T) bool {
	t.Helper()
	if p.Exited() {
		return false
	}
	p.Kill()
	// testbin.ExitCode says that a signal killed it, not which one.
	var ee *exec.ExitError
	if errors.As(p.Err(), &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

// localProc is a casesync process started here rather than with
// testbin.Start, for what a testbin.Proc lacks: stdin, and a signal other
// than SIGTERM (Stop) or SIGKILL (Kill): the test stops 'casesync run' with
// SIGINT, as a caseworker's Ctrl-C does. It keeps stdout and stderr apart.
type localProc struct {
	cmd    *exec.Cmd
	args   []string
	stdout *testbin.Buffer
	stderr *testbin.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // cmd.Wait's result, once done is closed
}

// startLocal starts casesync ARGS with stdin (may be nil) without waiting
// for it. It is killed when the test ends if still running, and a data race
// it reports fails the test.
func (d *device) startLocal(stdin io.Reader, args ...string) *localProc {
	d.t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = d.env()
	cmd.Dir = d.dir
	cmd.Stdin = stdin
	p := &localProc{cmd: cmd, args: args, stdout: &testbin.Buffer{}, stderr: &testbin.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start casesync: %v", err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t := d.t
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Kill()
		}
		<-p.done
		if out := p.stderr.String(); strings.Contains(out, "WARNING: DATA RACE") {
			t.Errorf("casesync %v reported a data race:\n%s", args, out)
		} else if t.Failed() {
			t.Logf("casesync %v output:\nstdout: %s\nstderr: %s", args, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func (p *localProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test if it is still running.
func (p *localProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("casesync %v still running %s later\nstderr: %s", p.args, timeout, p.stderr.String())
	}
	return testbin.MustExitCode(t, p.err)
}

// eventually polls cond every few milliseconds until it returns true, and
// fails the test with what() if timeout passes first.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond) // a poll interval, not synchronisation
	}
}

// libClient opens a library replica (cheap KDF) in dir and enrolls it as
// user; it is closed when the test ends.
func libClient(t *testing.T, s *servertest.Server, dir, user string) *client.Client {
	t.Helper()
	c, err := client.Open(dir, &client.Options{Passphrase: passphrase, KDF: cheapKDF})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, tok := s.Enroll(user)
	if err := c.Enroll(context.Background(), s.URL, tok); err != nil {
		t.Fatal(err)
	}
	return c
}

// serverRecords returns every record the server holds now, by key, read
// from its store, and the log head.
func serverRecords(t *testing.T, s *servertest.Server) (map[syncproto.Key]*syncproto.Record, uint64) {
	t.Helper()
	recs := map[syncproto.Key]*syncproto.Record{}
	var head uint64
	err := s.Store.View(context.Background(), func(tx server.Tx) error {
		var err error
		if head, err = tx.Head(); err != nil {
			return err
		}
		areas, err := tx.Areas()
		if err != nil {
			return err
		}
		after := map[string]uint64{}
		for _, a := range areas {
			after[a] = 0
		}
		return tx.Scan(after, head, func(it server.Item) (bool, error) {
			if it.Record != nil {
				if _, dup := recs[it.Key]; dup {
					return false, fmt.Errorf("record %s filed twice", it.Key)
				}
				recs[it.Key] = it.Record
			}
			return true, nil
		})
	})
	if err != nil {
		t.Fatalf("read server store: %v", err)
	}
	return recs, head
}

// serverHead returns the server's log head.
func serverHead(t *testing.T, s *servertest.Server) uint64 {
	t.Helper()
	var head uint64
	err := s.Store.View(context.Background(), func(tx server.Tx) error {
		var err error
		head, err = tx.Head()
		return err
	})
	if err != nil {
		t.Fatalf("server head: %v", err)
	}
	return head
}

// filesContain reports which of the markers occur in the raw bytes of any
// file in dir, as "file: marker".
func filesContain(t *testing.T, dir string, markers ...string) []string {
	t.Helper()
	var found []string
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range markers {
			if bytes.Contains(b, []byte(m)) {
				found = append(found, e.Name()+": "+m)
			}
		}
	}
	return found
}

// dump renders v as JSON for failure messages.
func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%+v", v)
	}
	return string(b)
}

func jsonUnmarshal(s string, v any) error {
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return fmt.Errorf("decode %q: %w", s, err)
	}
	return nil
}

// boltTxID returns the ID of the last transaction committed to the bbolt
// file at path, read from its two meta pages (plaintext bbolt metadata,
// checksummed, so a read torn by a concurrent commit is ignored), or 0.
// It lets a test watch another process's commits without opening the file.
func boltTxID(path string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var best uint64
	pageSize := int64(4096)
	for i := range int64(2) {
		buf := make([]byte, 80)
		if _, err := f.ReadAt(buf, i*pageSize); err != nil {
			return best
		}
		meta := buf[16:] // after the page header
		if binary.LittleEndian.Uint32(meta[0:]) != 0xED0CDAED {
			continue
		}
		if i == 0 {
			pageSize = int64(binary.LittleEndian.Uint32(meta[8:]))
		}
		h := fnv.New64a()
		h.Write(meta[:56])
		if h.Sum64() != binary.LittleEndian.Uint64(meta[56:]) {
			continue
		}
		best = max(best, binary.LittleEndian.Uint64(meta[48:]))
	}
	return best
}
