//go:build unix

package chaos_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
)

// device is one laptop: a replica directory used by 'casesync' processes,
// unlocked by a key file or a passphrase, reaching the server through its
// own link.
type device struct {
	t          *testing.T
	name       string // for the log: user/n
	user       string
	dir        string
	keyFile    string // set, or passphrase
	passphrase string
	id         string // device ID, once enrolled
	link       *link
	run        *proc // the current 'casesync run'; nil or exited when down
	killed     bool  // the schedule SIGKILLed run
	runs       int
	downFor    int         // steps until the schedule restarts a killed run
	cutFor     int         // steps until the schedule ends a blackhole of its link
	seq        uint64      // change sequence of the last write a command reported done
	revoked    *revocation // set once the office revoked it (revoke_test.go)
}

// newDevice makes the replica directory and, unless passphrase is set, a
// 32-byte key file (hex) beside it.
func newDevice(t *testing.T, name, user, passphrase string, l *link) *device {
	t.Helper()
	root := t.TempDir()
	d := &device{t: t, name: name, user: user, dir: filepath.Join(root, "replica"), passphrase: passphrase, link: l}
	if passphrase != "" {
		// Create the replica with a cheap Argon2id cost, which its header
		// keeps: the CLI unlocks it with the passphrase each command, and
		// the default cost (64 MiB, 3 passes) took seconds a command
		// when other work loaded the machine.
		c, err := client.Open(d.dir, &client.Options{Passphrase: passphrase, KDF: client.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	} else {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		d.keyFile = filepath.Join(root, "replica.key")
		if err := os.WriteFile(d.keyFile, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (d *device) env() []string {
	env := append(cleanEnv(), "CASESYNC_DIR="+d.dir)
	if d.keyFile != "" {
		return append(env, "CASESYNC_KEY_FILE="+d.keyFile)
	}
	return append(env, "CASESYNC_PASSPHRASE="+d.passphrase)
}

// options opens the replica in-process, after every process stopped.
func (d *device) options() *client.Options {
	return &client.Options{KeyFile: d.keyFile, Passphrase: d.passphrase}
}

// cli runs 'casesync ARGS' to completion (at most timeout).
func (d *device) cli(timeout time.Duration, args ...string) result {
	return runCmd(timeout, d.dir, d.env(), clientBin, args...)
}

// mustJSON runs 'casesync --json ARGS', requires exit 0 and decodes stdout.
func (d *device) mustJSON(out any, args ...string) {
	d.t.Helper()
	r := d.cli(60*time.Second, append([]string{"--json"}, args...)...)
	if r.Code != 0 {
		d.t.Fatalf("%s: casesync %v", d.name, r)
	}
	if err := json.Unmarshal([]byte(r.Stdout), out); err != nil {
		d.t.Fatalf("%s: decode %v: %v", d.name, r, err)
	}
}

// enroll binds the replica to the server through the device's link.
func (d *device) enroll(token string) {
	d.t.Helper()
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		d.t.Fatal(err)
	}
	var st client.Status
	d.mustJSON(&st, "enroll", "--server", d.link.url(), "--token", token)
	if !st.Enrolled || st.User != d.user || st.Device == "" {
		d.t.Fatalf("%s: enroll: status %+v", d.name, st)
	}
	d.id = st.Device
}

// running reports whether 'casesync run' is up.
func (d *device) running() bool { return d.run != nil && !d.run.Exited() }

// startRun starts 'casesync run' in the background.
func (d *device) startRun() {
	d.t.Helper()
	d.runs++
	d.killed = false
	d.run = startProc(d.t, fmt.Sprintf("%s run#%d", d.name, d.runs), d.dir, d.env(), clientBin, "run")
}

// kill9 SIGKILLs 'casesync run'.
func (d *device) kill9() {
	d.killed = true
	d.run.Kill()
}

// stopRun stops 'casesync run' with SIGTERM and requires exit 0: Run
// returns nil when its context ends.
func (d *device) stopRun() {
	d.t.Helper()
	if d.run == nil {
		return
	}
	// SIGTERM before the process installed its handler would kill it:
	// wait for the line it prints once it has.
	if err := d.run.WaitOutput("syncing in the background", 20*time.Second); err != nil {
		d.t.Errorf("%s: %v", d.name, err)
	}
	if d.run.Exited() {
		d.t.Errorf("%s: 'casesync run' exited by itself: %v\n%s", d.name, d.run.Err(), tail(d.run.Output(), 20))
		return
	}
	code, err := d.run.Stop(30 * time.Second)
	if err != nil || code != 0 {
		d.t.Errorf("%s: 'casesync run' after SIGTERM: exit %d, %v; want 0\n%s", d.name, code, err, tail(d.run.Output(), 20))
	}
}

// outcome classifies a write command's result: done (exit 0, it printed
// an ID where it prints one), refused for a reason the CLI states, or
// broken.
func outcome(r result) (done bool, problem string) {
	if r.Code == 0 {
		return true, ""
	}
	for _, s := range []string{"panic:", "fatal error:", "DATA RACE", "SIGSEGV"} {
		if strings.Contains(r.Stderr, s) {
			return false, "crashed"
		}
	}
	if r.Code < 0 {
		return false, "did not finish"
	}
	return false, ""
}
