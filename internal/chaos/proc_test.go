//go:build unix

package chaos_test

import (
	"testing"
	"time"

	"github.com/casesync/casesync/internal/testbin"
)

// The test's processes are internal/testbin's: a long-running one (casesyncd,
// 'casesync run') is a proc, a command run to completion gives a result.
type (
	proc   = testbin.Proc
	result = testbin.Result
)

// cleanEnv is the test process's environment without CASESYNC_ variables,
// so a developer's settings cannot change what the test runs.
func cleanEnv() []string { return testbin.CleanEnv([]string{"CASESYNC_"}) }

// startProc starts bin with args and env in dir; it is SIGKILLed when the
// test ends if it still runs.
func startProc(t testing.TB, name, dir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	return testbin.Start(t, name, testbin.Cmd{Path: bin, Args: args, Env: env, Dir: dir})
}

// runCmd runs bin to completion, for at most timeout; it never fails the
// test itself.
func runCmd(timeout time.Duration, dir string, env []string, bin string, args ...string) result {
	return testbin.Run(timeout, testbin.Cmd{Path: bin, Args: args, Env: env, Dir: dir})
}

func tail(s string, n int) string { return testbin.Tail(s, n) }
