// Package testbin runs this module's commands as real child processes in
// tests: it builds a binary once per test binary, starts it with the
// environment and arguments a test gives, waits for a line in its output,
// signals and kills it, and keeps what it printed for the failure report.
//
// Why a package: every test that execs casesync or casesyncd needs the
// same care, and each copy got some of it wrong at first — build once in
// TestMain rather than per test; never let a developer's CASESYNC_
// variables change what runs; kill every process the test started, even
// when it fails half-way; wait for a condition with a deadline instead of
// sleeping; tell a SIGKILL from an exit code; collect output safely while
// the process still writes it.
package testbin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build runs 'go build -o dir/<last element of pkg> [flags] pkg' and
// returns the binary's path. pkg is an import path of the module; flags
// are extra build flags such as "-race". Call it from TestMain, once.
func Build(dir, pkg string, flags ...string) (string, error) {
	out := filepath.Join(dir, pkg[strings.LastIndex(pkg, "/")+1:])
	if runtime.GOOS == "windows" {
		out += ".exe"
	}
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.Command("go", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.String())
	}
	return out, nil
}

// CleanEnv returns the test process's environment without the variables
// whose names start with one of prefixes (e.g. "CASESYNC_"), so that a
// developer's settings cannot change what a test runs, plus extra.
func CleanEnv(prefixes []string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		keep := true
		for _, p := range prefixes {
			keep = keep && !strings.HasPrefix(kv, p)
		}
		if keep {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// Cmd is a command to run.
type Cmd struct {
	Path string   // the binary
	Args []string // arguments, without the program name
	Env  []string // the whole environment (see CleanEnv)
	Dir  string   // working directory; empty for the test's
}

// Buffer collects a process's output while it runs; it is safe for
// concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Proc is a child process started by Start.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, once done is closed
}

// Start starts c without waiting for it; stdout and stderr go to one
// buffer. The process is SIGKILLed when the test ends if it still runs,
// and the last lines of its output are logged if the test failed. name
// labels it in messages.
func Start(tb testing.TB, name string, c Cmd) *Proc {
	tb.Helper()
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Dir, cmd.Env = c.Dir, c.Env
	p := &Proc{name: name, cmd: cmd, out: &Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("%s (pid %d) output, last lines:\n%s", name, cmd.Process.Pid, Tail(p.out.String(), 60))
		}
	})
	return p
}

// Name is the label Start was given.
func (p *Proc) Name() string { return p.name }

// Output returns everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is cmd.Wait's result; valid once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Kill SIGKILLs the process if it is still running and waits until it is
// gone.
func (p *Proc) Kill() {
	if !p.Exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Stop sends SIGTERM and waits up to timeout for the process to exit. It
// returns the exit code, or an error if the process was killed by a
// signal or did not exit in time (it is then SIGKILLed).
func (p *Proc) Stop(timeout time.Duration) (int, error) {
	if p.Exited() {
		return ExitCode(p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return -1, fmt.Errorf("signal %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return ExitCode(p.err)
	case <-time.After(timeout):
		p.Kill()
		return -1, fmt.Errorf("%s still running %s after SIGTERM", p.name, timeout)
	}
}

// WaitOutput polls the process's output until it contains s, and returns
// an error if the process exits first or timeout passes.
func (p *Proc) WaitOutput(s string, timeout time.Duration) error {
	return p.WaitFor(timeout, func() error {
		if strings.Contains(p.out.String(), s) {
			return nil
		}
		return fmt.Errorf("no %q in its output yet", s)
	})
}

// WaitFor polls cond every few milliseconds until it returns nil, and
// returns an error if the process exits first or timeout passes: a wait
// for a condition with a deadline, never a sleep for a result.
func (p *Proc) WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s: %w", p.name, timeout, err)
		}
		select {
		case <-p.done:
			if cond() == nil {
				return nil
			}
			return fmt.Errorf("%s exited (%v) while waiting: %w", p.name, p.err, err)
		case <-tick.C:
		}
	}
}

// ExitCode turns cmd.Wait's error into an exit code; a process killed by
// a signal is an error.
func ExitCode(err error) (int, error) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -1, fmt.Errorf("killed by signal %v", ws.Signal())
		}
		return ee.ExitCode(), nil
	}
	return -1, err
}

// MustExitCode returns the exit code of a process from cmd.Wait's error,
// -1 if a signal killed it (the caller decides whether that was meant),
// and fails tb if the process did not run at all.
func MustExitCode(tb testing.TB, err error) int {
	tb.Helper()
	code, xerr := ExitCode(err)
	var ee *exec.ExitError
	if xerr != nil && !errors.As(err, &ee) {
		tb.Fatalf("process: %v", xerr)
	}
	return code
}

// Ready reports nil once GET url answers 200: a server's readiness probe,
// for WaitFor.
func Ready(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// Result is what a command run to completion did.
type Result struct {
	Args           []string
	Stdout, Stderr string
	Code           int // the exit code; -1 if it did not finish or was killed by a signal
	Took           time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%s: exit %d in %s\nstdout: %s\nstderr: %s", strings.Join(r.Args, " "), r.Code,
		r.Took.Round(time.Millisecond), strings.TrimSpace(r.Stdout), strings.TrimSpace(r.Stderr))
}

// Run runs c to completion, for at most timeout. It never fails the test
// itself, so it may be called from any goroutine: a command that did not
// finish, or was killed, has Code -1 and says why at the end of Stderr.
func Run(timeout time.Duration, c Cmd) Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Path, c.Args...)
	cmd.Dir, cmd.Env = c.Dir, c.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := Result{Args: c.Args, Stdout: stdout.String(), Stderr: stderr.String(), Took: time.Since(start)}
	code, xerr := ExitCode(err)
	r.Code = code
	if xerr != nil || ctx.Err() != nil {
		r.Code = -1
		r.Stderr += fmt.Sprintf("\n[testbin: %v; context: %v]", xerr, ctx.Err())
	}
	return r
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines before]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
