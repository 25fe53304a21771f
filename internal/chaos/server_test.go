//go:build unix

package chaos_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/internal/testbin"
)

// httpc never keeps connections alive, so no transport goroutine outlives
// the test (goleak) and no request reuses a connection to a killed server.
var httpc = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// daemon is casesyncd on a fixed loopback address and data directory,
// started, killed and restarted by the test.
type daemon struct {
	t      *testing.T
	addr   string // 127.0.0.1:port, kept across restarts
	data   string
	work   string // working directory of its processes
	p      *proc  // the current process; nil before the first start
	killed bool   // the schedule SIGKILLed p
	starts int
	logs   []string // output of earlier processes, for failure reports
}

// newDaemon picks a free loopback port and a data directory.
func newDaemon(t *testing.T) *daemon {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	d := &daemon{t: t, addr: addr, data: filepath.Join(root, "data"), work: root}
	t.Cleanup(func() {
		if t.Failed() {
			for i, out := range d.logs {
				t.Logf("casesyncd run %d, last lines:\n%s", i+1, tail(out, 40))
			}
		}
	})
	return d
}

func (d *daemon) url() string { return "http://" + d.addr }

// up reports whether the current process is running.
func (d *daemon) up() bool { return d.p != nil && !d.p.Exited() }

// start starts casesyncd on d's address and data directory and waits until
// /readyz answers 200 (polling with a deadline).
func (d *daemon) start() {
	d.t.Helper()
	if d.up() {
		d.t.Fatalf("casesyncd: start while running")
	}
	d.starts++
	d.killed = false
	d.p = startProc(d.t, fmt.Sprintf("casesyncd#%d", d.starts), d.work, cleanEnv(), serverBin,
		"--addr", d.addr, "--data", d.data, "--log-level", "info")
	if err := d.p.WaitFor(20*time.Second, d.ready); err != nil {
		d.t.Fatalf("casesyncd at %s not ready: %v\n%s", d.addr, err, d.p.Output())
	}
}

func (d *daemon) ready() error { return testbin.Ready(httpc, d.url()+"/readyz") }

// kill9 SIGKILLs the server.
func (d *daemon) kill9() {
	d.killed = true
	d.p.Kill()
	d.logs = append(d.logs, d.p.Output())
}

// stop shuts the server down with SIGTERM and requires a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	code, err := d.p.Stop(30 * time.Second)
	d.logs = append(d.logs, d.p.Output())
	if err != nil || code != 0 {
		d.t.Errorf("casesyncd after SIGTERM: exit %d, %v; want a clean exit 0", code, err)
	}
}

// admin runs 'casesyncd admin --json ARGS' against the server.
func (d *daemon) admin(args ...string) result {
	full := append([]string{"admin", "--server", d.url(), "--token-file", filepath.Join(d.data, "admin.token"), "--json"}, args...)
	return runCmd(30*time.Second, d.work, cleanEnv(), serverBin, full...)
}

// mustAdmin runs an admin command and fails the test unless it exits 0.
func (d *daemon) mustAdmin(args ...string) result {
	d.t.Helper()
	r := d.admin(args...)
	if r.Code != 0 {
		d.t.Fatalf("casesyncd %v", r)
	}
	return r
}

// enroll enrolls a new device for user and returns its token.
func (d *daemon) enroll(user, label string) string {
	d.t.Helper()
	r := d.mustAdmin("device", "enroll", user, "--label", label)
	var e struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &e); err != nil || !strings.HasPrefix(e.Token, "cs_") {
		d.t.Fatalf("device enroll --json printed %q (%v)", r.Stdout, err)
	}
	return e.Token
}
