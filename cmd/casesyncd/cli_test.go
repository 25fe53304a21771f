//go:build unix

package main_test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

var tokenLine = regexp.MustCompile(`^cs_[A-Za-z0-9_-]{43}\n$`)

// TestFreshStart starts casesyncd on an empty machine as the README says,
// with and without the serve subcommand.
func TestFreshStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  []string
	}{
		{"no subcommand", nil},
		{"serve", []string{"serve"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A data directory that does not exist yet: casesyncd creates it.
			data := filepath.Join(t.TempDir(), "casesync-data")
			addr := freeAddr(t)
			args := append(slices.Clone(tc.sub), "--addr", addr, "--data", data)
			d := launch(t, "", addr, data, nil, args...)
			d.waitReady(t)

			if status, body := get(t, d.URL+"/healthz"); status != http.StatusOK || body != "ok\n" {
				t.Errorf("GET /healthz = %d %q, want 200 \"ok\\n\"", status, body)
			}
			for _, f := range []struct {
				path string
				mode os.FileMode
			}{
				{data, 0o700 | os.ModeDir},
				{d.TokenFile(), 0o600},
				{filepath.Join(data, "casesync.db"), 0o600},
			} {
				fi, err := os.Stat(f.path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != f.mode {
					t.Errorf("%s has mode %v, want %v", f.path, fi.Mode(), f.mode)
				}
			}
			b, err := os.ReadFile(d.TokenFile())
			if err != nil {
				t.Fatal(err)
			}
			if !tokenLine.Match(b) {
				t.Fatalf("admin.token holds %d bytes not of the form cs_<43 base64url>\\n", len(b))
			}
			token := strings.TrimSpace(string(b))
			if !strings.Contains(d.Output(), "casesyncd listening") || !strings.Contains(d.Output(), "http://"+addr) {
				t.Errorf("log does not announce the listen URL http://%s:\n%s", addr, d.Output())
			}
			// The token works for the admin CLI.
			if r := d.mustAdmin(t, "user", "list", "--json"); strings.TrimSpace(r.Stdout) != "[]" {
				t.Errorf("user list --json on a fresh server = %q, want []", r.Stdout)
			}
			d.stop(t)
			if strings.Contains(d.Output(), token) {
				t.Error("the admin token appears in casesyncd's output")
			}

			// A restart keeps the token: the admin's scripts keep working.
			d = startAt(t, addr, data)
			b2, err := os.ReadFile(d.TokenFile())
			if err != nil {
				t.Fatal(err)
			}
			if string(b2) != string(b) {
				t.Error("restart replaced admin.token")
			}
			d.mustAdmin(t, "user", "list")
			d.stop(t)
			if strings.Contains(d.Output(), token) {
				t.Error("the admin token appears in casesyncd's output after a restart")
			}
		})
	}
}

type userJSON struct {
	Name  string   `json:"name"`
	Role  string   `json:"role"`
	Areas []string `json:"areas"`
}

type deviceJSON struct {
	ID      string `json:"id"`
	User    string `json:"user"`
	Label   string `json:"label"`
	Revoked string `json:"revoked"`
	Online  bool   `json:"online"`
}

func decodeJSON[T any](t *testing.T, what, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, s)
	}
	return v
}

// TestAdminCLI walks through the README's admin commands against a real
// server, as a separate process each time.
func TestAdminCLI(t *testing.T) {
	d := start(t, t.TempDir())

	r := d.mustAdmin(t, "user", "add", "anouk", "--role", "caseworker", "--areas", "Zuilen,Ondiep")
	if !strings.Contains(r.Stdout, "anouk") || !strings.Contains(r.Stdout, "caseworker") {
		t.Errorf("user add printed %q, want the new user", r.Stdout)
	}
	d.mustAdmin(t, "user", "add", "lotte", "--role", "lead")

	r = d.mustAdmin(t, "device", "enroll", "anouk", "--label", "x")
	if !tokenLine.MatchString(r.Stdout) {
		t.Fatalf("device enroll printed %q, want exactly one line: the token", r.Stdout)
	}
	if r.Stderr != "" {
		t.Errorf("device enroll wrote to stderr: %q", r.Stderr)
	}
	token := strings.TrimSpace(r.Stdout)

	users := decodeJSON[[]userJSON](t, "user list --json", d.mustAdmin(t, "user", "list", "--json").Stdout)
	i := slices.IndexFunc(users, func(u userJSON) bool { return u.Name == "anouk" })
	if i < 0 || users[i].Role != "caseworker" || !slices.Equal(users[i].Areas, []string{"Ondiep", "Zuilen"}) {
		t.Errorf("user list --json = %+v, want anouk caseworker [Ondiep Zuilen]", users)
	}
	if len(users) != 2 {
		t.Errorf("user list --json has %d users, want 2", len(users))
	}

	r = d.mustAdmin(t, "device", "list", "--json")
	if strings.Contains(r.Stdout, token) || strings.Contains(r.Stdout, "token") {
		t.Errorf("device list --json shows the token or its hash:\n%s", r.Stdout)
	}
	devs := decodeJSON[[]deviceJSON](t, "device list --json", r.Stdout)
	if len(devs) != 1 || devs[0].User != "anouk" || devs[0].Label != "x" || devs[0].Revoked != "" || devs[0].ID == "" {
		t.Fatalf("device list --json = %+v, want anouk's device x", devs)
	}
	id := devs[0].ID
	if r := d.mustAdmin(t, "device", "list"); strings.Contains(r.Stdout, token) || !strings.Contains(r.Stdout, id) {
		t.Errorf("device list (human) = %q, want the device ID and no token", r.Stdout)
	}

	// The printed token opens a session as that device.
	c, w := servertest.Handshake(t, d.WS, id, token, &syncproto.Hello{Live: true})
	if w.User != "anouk" || !slices.Equal(w.Scope.Areas, []string{"Ondiep", "Zuilen"}) {
		t.Errorf("welcome = user %q scope %v, want anouk [Ondiep Zuilen]", w.User, w.Scope.Areas)
	}
	servertest.Until[*syncproto.CaughtUp](c)
	devs = decodeJSON[[]deviceJSON](t, "device list --json", d.mustAdmin(t, "device", "list", "--json").Stdout)
	if len(devs) != 1 || !devs[0].Online {
		t.Errorf("device list --json during a session = %+v, want online", devs)
	}

	// set-areas reaches the live session and the user list.
	d.mustAdmin(t, "user", "set-areas", "anouk", "--areas", "Zuilen")
	up, _ := servertest.Until[*syncproto.ScopeUpdate](c)
	if !slices.Equal(up.Lost, []string{"Ondiep"}) {
		t.Errorf("scope update after set-areas = %+v, want Ondiep lost", up)
	}
	users = decodeJSON[[]userJSON](t, "user list --json", d.mustAdmin(t, "user", "list", "--json").Stdout)
	if i := slices.IndexFunc(users, func(u userJSON) bool { return u.Name == "anouk" }); i < 0 || !slices.Equal(users[i].Areas, []string{"Zuilen"}) {
		t.Errorf("after set-areas, user list = %+v, want anouk [Zuilen]", users)
	}

	if r := d.mustAdmin(t, "conflicts", "--json"); strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("conflicts --json = %q, want []", r.Stdout)
	}
	if r := d.mustAdmin(t, "conflicts", "--area", "Zuilen", "--json"); strings.TrimSpace(r.Stdout) != "[]" {
		t.Errorf("conflicts --area Zuilen --json = %q, want []", r.Stdout)
	}

	// Revoking ends the live session and refuses the token from then on.
	d.mustAdmin(t, "device", "revoke", id)
	if _, code := c.ExpectClose(); code != syncproto.CloseRevoked {
		t.Errorf("revoked session closed with %d, want %d", code, syncproto.CloseRevoked)
	}
	devs = decodeJSON[[]deviceJSON](t, "device list --json", d.mustAdmin(t, "device", "list", "--json").Stdout)
	if len(devs) != 1 || devs[0].Revoked == "" {
		t.Errorf("device list --json after revoke = %+v, want revoked set", devs)
	}
	if _, resp, err := servertest.Dial(t, d.WS, token); err == nil {
		t.Error("a revoked token still opens a WebSocket")
	} else if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("revoked token upgrade: %v, want 401", err)
	} else {
		resp.Body.Close()
	}

	// Errors: a wrong admin token, an unknown user, no server.
	wrong := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(wrong, []byte("cs_wrongwrongwrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"wrong admin token", []string{"--server", d.URL, "--token-file", wrong, "user", "list"}, []string{"401", "admin token"}},
		{"missing token file", []string{"--server", d.URL, "--token-file", wrong + ".nope", "user", "list"}, []string{"read admin token", "--token-file"}},
		{"unknown user", []string{"--server", d.URL, "--token-file", d.TokenFile(), "device", "enroll", "nobody"}, []string{"no user"}},
		{"duplicate user", []string{"--server", d.URL, "--token-file", d.TokenFile(), "user", "add", "anouk", "--role", "lead"}, []string{"exists"}},
		{"bad role", []string{"--server", d.URL, "--token-file", d.TokenFile(), "user", "add", "x", "--role", "boss"}, []string{"role"}},
		{"no server", []string{"--server", "http://" + freeAddr(t), "--token-file", d.TokenFile(), "user", "list"}, []string{"is it running"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runIn(t, "", nil, append([]string{"admin"}, tc.args...)...)
			if r.Code == 0 {
				t.Fatalf("exit 0, want failure; stdout %q", r.Stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("stderr %q does not mention %q", r.Stderr, w)
				}
			}
			if r.Stdout != "" {
				t.Errorf("a failed command printed %q on stdout", r.Stdout)
			}
		})
	}
}

// TestUsageErrors checks exit codes of command-line mistakes: 2 for usage
// errors, as flag and most Unix tools do; 0 for help.
func TestUsageErrors(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte("cs_x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Nothing listens here: no usage error may reach the network.
	srv := "http://" + freeAddr(t)
	admin := func(args ...string) []string {
		return append([]string{"admin", "--server", srv, "--token-file", tok}, args...)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // substring; "" for none required
		stdout string
	}{
		{"admin without command", admin(), 2, "Usage: casesyncd admin", ""},
		{"admin unknown command", admin("frobnicate"), 2, "Usage: casesyncd admin", ""},
		{"admin unknown user subcommand", admin("user", "frob", "x"), 2, "Usage: casesyncd admin", ""},
		{"admin user add without name", admin("user", "add", "--role", "lead"), 2, "usage: casesyncd admin user add", ""},
		{"admin device revoke without id", admin("device", "revoke"), 2, "usage: casesyncd admin device revoke", ""},
		{"unknown command", []string{"frobnicate", "--addr", freeAddr(t), "--data", t.TempDir()}, 2, "frobnicate", ""},
		{"help", []string{"help"}, 0, "", "Usage:"},
		{"admin -h", []string{"admin", "-h"}, 0, "Usage: casesyncd admin", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := runIn(t, "", nil, tc.args...)
			if r.Code != tc.code {
				t.Errorf("casesyncd %v: exit %d, want %d\nstdout: %s\nstderr: %s", tc.args, r.Code, tc.code, r.Stdout, r.Stderr)
			}
			if !strings.Contains(r.Stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", r.Stderr, tc.stderr)
			}
			if !strings.Contains(r.Stdout, tc.stdout) {
				t.Errorf("stdout %q does not contain %q", r.Stdout, tc.stdout)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %s: a usage error must not wait for anything", time.Since(start))
			}
		})
	}
}

// TestEnvOverrides checks that CASESYNC_ADDR and CASESYNC_DATA (and the
// admin CLI's CASESYNC_SERVER and CASESYNC_ADMIN_TOKEN_FILE) are honoured
// when flags are absent, that flags win over them, and that the default
// data directory is ./casesync-data.
func TestEnvOverrides(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sub      []string
		envAddr  bool // CASESYNC_ADDR names the address
		envData  bool // CASESYNC_DATA names the data directory
		flags    bool // --addr and --data name them, env names others
		defaults bool // no data directory given: ./casesync-data
	}{
		{name: "env only", envAddr: true, envData: true},
		{name: "env only, serve", sub: []string{"serve"}, envAddr: true, envData: true},
		{name: "flags win over env", flags: true},
		{name: "default data directory", envAddr: true, defaults: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cwd := t.TempDir()
			addr, data := freeAddr(t), filepath.Join(t.TempDir(), "data")
			decoyAddr, decoyData := freeAddr(t), filepath.Join(t.TempDir(), "decoy")
			if tc.defaults {
				data = filepath.Join(cwd, "casesync-data")
			}
			var env []string
			args := slices.Clone(tc.sub)
			switch {
			case tc.flags:
				env = []string{"CASESYNC_ADDR=" + decoyAddr, "CASESYNC_DATA=" + decoyData}
				args = append(args, "--addr", addr, "--data", data)
			default:
				env = []string{"CASESYNC_ADDR=" + addr}
				if tc.envData {
					env = append(env, "CASESYNC_DATA="+data)
				}
			}
			d := launch(t, cwd, addr, data, env, args...)
			d.waitReady(t)
			if _, err := os.Stat(d.TokenFile()); err != nil {
				t.Errorf("no admin token where expected: %v", err)
			}
			if tc.flags {
				if _, err := os.Stat(decoyData); err == nil {
					t.Errorf("CASESYNC_DATA=%s was used although --data was given", decoyData)
				}
				if resp, err := httpc.Get("http://" + decoyAddr + "/healthz"); err == nil {
					resp.Body.Close()
					t.Errorf("casesyncd also answers on CASESYNC_ADDR=%s although --addr was given", decoyAddr)
				}
			}
			// The admin CLI from the same directory: env for the server URL,
			// and the default token file ./casesync-data/admin.token or
			// CASESYNC_ADMIN_TOKEN_FILE.
			aenv := []string{"CASESYNC_SERVER=" + d.URL}
			if !tc.defaults {
				aenv = append(aenv, "CASESYNC_ADMIN_TOKEN_FILE="+d.TokenFile())
			}
			r := runIn(t, cwd, aenv, "admin", "user", "add", "anouk", "--role", "caseworker", "--areas", "Zuilen")
			if r.Code != 0 {
				t.Fatalf("admin with env: exit %d: %s", r.Code, r.Stderr)
			}
			r = runIn(t, cwd, aenv, "admin", "user", "list", "--json")
			if users := decodeJSON[[]userJSON](t, "user list", r.Stdout); len(users) != 1 || users[0].Name != "anouk" {
				t.Errorf("user list via env = %+v", users)
			}
			d.stop(t)
		})
	}
}

// TestSecondInstance starts a second casesyncd on the first one's data
// directory or address: it must fail fast and say why, and leave the first
// one serving.
func TestSecondInstance(t *testing.T) {
	first := start(t, t.TempDir())
	first.mustAdmin(t, "user", "add", "anouk", "--role", "lead")
	tokenBefore, err := os.ReadFile(first.TokenFile())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		addr, data string
		want       string
	}{
		{"same data directory", freeAddr(t), first.Data, "data directory is in use"},
		{"same address", first.Addr, t.TempDir(), "address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			began := time.Now()
			second := launch(t, "", tc.addr, tc.data, nil, "--addr", tc.addr, "--data", tc.data)
			code := second.wait(t, 10*time.Second)
			took := time.Since(began)
			if code == 0 {
				t.Errorf("second casesyncd exited 0, want failure")
			}
			if took > 5*time.Second {
				t.Errorf("second casesyncd took %s to fail, want well under 10 s", took)
			}
			if !strings.Contains(second.Output(), tc.want) {
				t.Errorf("second casesyncd's output does not say %q:\n%s", tc.want, second.Output())
			}
			t.Logf("failed in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(second.Output()))
		})
	}
	// The first one is untouched.
	if status, _ := get(t, first.URL+"/readyz"); status != http.StatusOK {
		t.Errorf("first casesyncd /readyz = %d after the second one's attempt", status)
	}
	if b, _ := os.ReadFile(first.TokenFile()); string(b) != string(tokenBefore) {
		t.Error("the second casesyncd rewrote admin.token")
	}
	users := decodeJSON[[]userJSON](t, "user list", first.mustAdmin(t, "user", "list", "--json").Stdout)
	if len(users) != 1 {
		t.Errorf("first casesyncd lists %d users, want 1", len(users))
	}
	first.stop(t)
}
