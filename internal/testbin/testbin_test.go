//go:build unix

package testbin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/casesync/casesync/internal/testbin"
)

// TestMain doubles as the child process: with TESTBIN_HELPER set, the
// test binary behaves as the mode says instead of running tests.
func TestMain(m *testing.M) {
	switch os.Getenv("TESTBIN_HELPER") {
	case "":
		goleak.VerifyTestMain(m)
	case "serve":
		// Like a server: say it is listening, exit 0 on SIGTERM.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("listening on 127.0.0.1:1")
		<-sig
		fmt.Println("stopped cleanly")
		os.Exit(0)
	case "exit3":
		fmt.Fprintln(os.Stderr, "refused")
		os.Exit(3)
	case "hang":
		select {}
	}
}

func helper(mode string) testbin.Cmd {
	return testbin.Cmd{Path: os.Args[0], Env: testbin.CleanEnv([]string{"TESTBIN_"}, "TESTBIN_HELPER="+mode)}
}

func TestProc_Stop(t *testing.T) {
	p := testbin.Start(t, "serve", helper("serve"))
	if err := p.WaitOutput("listening on", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	code, err := p.Stop(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("Stop() = %d, %v, want 0, nil", code, err)
	}
	if !strings.Contains(p.Output(), "stopped cleanly") {
		t.Fatalf("output %q lacks the clean stop", p.Output())
	}
}

func TestProc_Kill(t *testing.T) {
	p := testbin.Start(t, "hang", helper("hang"))
	p.Kill()
	if !p.Exited() {
		t.Fatal("Exited() = false after Kill")
	}
	if code, err := testbin.ExitCode(p.Err()); err == nil {
		t.Fatalf("ExitCode after SIGKILL = %d, nil; want an error naming the signal", code)
	}
	if code := testbin.MustExitCode(t, p.Err()); code != -1 {
		t.Fatalf("MustExitCode after SIGKILL = %d, want -1", code)
	}
	if err := p.WaitOutput("never", time.Second); err == nil {
		t.Fatal("WaitOutput on an exited process returned nil")
	}
}

func TestMustExitCode(t *testing.T) {
	p := testbin.Start(t, "exit3", helper("exit3"))
	<-p.Done()
	if code := testbin.MustExitCode(t, p.Err()); code != 3 {
		t.Fatalf("MustExitCode = %d, want 3", code)
	}
	if code := testbin.MustExitCode(t, nil); code != 0 {
		t.Fatalf("MustExitCode(nil) = %d, want 0", code)
	}
}

func TestReady(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusServiceUnavailable)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if err := testbin.Ready(c, srv.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Ready of a 503 = %v, want an error naming it", err)
	}
	status.Store(http.StatusOK)
	if err := testbin.Ready(c, srv.URL); err != nil {
		t.Fatalf("Ready of a 200 = %v", err)
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name, mode string
		timeout    time.Duration
		code       int
		stderr     string
	}{
		{"OK", "serve-not", 10 * time.Second, 0, ""}, // no mode: runs the (no) tests, exits 0
		{"ExitCode", "exit3", 10 * time.Second, 3, "refused"},
		{"ErrTimeout", "hang", 200 * time.Millisecond, -1, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := helper(tt.mode)
			if tt.mode == "serve-not" {
				c = testbin.Cmd{Path: os.Args[0], Args: []string{"-test.run=^$"}, Env: testbin.CleanEnv([]string{"TESTBIN_"})}
			}
			r := testbin.Run(tt.timeout, c)
			if r.Code != tt.code || !strings.Contains(r.Stderr, tt.stderr) {
				t.Fatalf("Run(%s) = %v, want exit %d and %q on stderr", tt.mode, r, tt.code, tt.stderr)
			}
		})
	}
}
