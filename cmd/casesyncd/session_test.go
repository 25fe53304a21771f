//go:build unix

package main_test

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// TestGracefulShutdown sends SIGTERM while a live session is open and a
// push is in flight: the device is told to come back later (1001), what
// was acknowledged survives, and the process exits 0 saying so.
func TestGracefulShutdown(t *testing.T) {
	data := t.TempDir()
	d := start(t, data)
	d.mustAdmin(t, "user", "add", "anouk", "--role", "caseworker", "--areas", "Zuilen")
	token := strings.TrimSpace(d.mustAdmin(t, "device", "enroll", "anouk", "--label", "laptop").Stdout)
	devs := decodeJSON[[]deviceJSON](t, "device list", d.mustAdmin(t, "device", "list", "--json").Stdout)
	if len(devs) != 1 {
		t.Fatalf("device list = %+v", devs)
	}
	id := devs[0].ID

	clock := syncproto.NewClock(nil, 0)
	c, _ := servertest.Handshake(t, d.WS, id, token, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](c)
	if ack := push(t, c, newCase(1, clock, "case1", "Zuilen", "J. Jansen")); !slices.Equal(ack.Accepted, []uint64{1}) {
		t.Fatalf("ack = %+v, want change 1 accepted", ack)
	}
	// A push the server may be applying when the signal arrives.
	inflight := newEntry(2, clock, "note1", "case1", "anouk", "written as the server stops")
	c.Send(&syncproto.Push{Changes: []syncproto.Change{inflight}})
	d.sigterm(t)

	var acked []uint64
	var code int
	for {
		m, err := c.Next(30 * time.Second)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("session ended with %v, want a close frame", err)
			}
			code = ce.Code
			break
		}
		switch m := m.(type) {
		case *syncproto.Ack:
			acked = append(acked, m.Accepted...)
			if len(m.Rejected) > 0 {
				t.Errorf("in-flight push rejected: %+v", m.Rejected)
			}
		case *syncproto.Error:
			t.Errorf("error message before the close: %+v", m)
		}
	}
	if code != syncproto.CloseGoingAway {
		t.Errorf("close code = %d, want %d (going away)", code, syncproto.CloseGoingAway)
	}
	if exit := d.wait(t, 30*time.Second); exit != 0 {
		t.Errorf("casesyncd exited %d after SIGTERM, want 0", exit)
	}
	for _, want := range []string{"shutting down", "stopped cleanly", "store closed"} {
		if !strings.Contains(d.Output(), want) {
			t.Errorf("log does not say %q:\n%s", want, d.Output())
		}
	}
	t.Logf("in-flight push acknowledged before the close: %v", slices.Contains(acked, 2))

	// After a restart: change 1 is there; change 2 is there exactly if it
	// was acknowledged (a graceful stop finishes and acknowledges a push it
	// started, and stores nothing it did not acknowledge).
	d = startAt(t, d.Addr, data)
	recs, _, head := pullAll(t, d.WS, id, token)
	if _, ok := recs[syncproto.Key{Collection: syncproto.Cases, ID: "case1"}]; !ok {
		t.Error("acknowledged case1 lost over a graceful restart")
	}
	_, stored := recs[inflight.Key()]
	if stored != slices.Contains(acked, 2) {
		t.Errorf("in-flight note stored=%v but acknowledged=%v (log head %d)", stored, slices.Contains(acked, 2), head)
	}
	d.stop(t)
}

// frame builds a raw uncompressed frame of type typ around payload.
func frame(typ syncproto.Type, payload string) []byte {
	f := make([]byte, syncproto.HeaderLen, syncproto.HeaderLen+len(payload))
	f[0] = byte(typ)
	binary.BigEndian.PutUint32(f[2:], uint32(len(payload)))
	return append(f, payload...)
}

// TestLogsHoldNoSecrets runs a session with debug logging that pushes a
// note and a tenant name with unique markers, has changes rejected, sends
// bad frames and bad tokens, and checks that the process's whole output
// holds no marker, name or token.
func TestLogsHoldNoSecrets(t *testing.T) {
	data := t.TempDir()
	d := start(t, data, "--log-level", "debug")
	mark := func(prefix string) string { return prefix + strconv.FormatUint(rand.Uint64(), 36) }
	user, label := mark("person"), mark("label")
	tenant, note := mark("TENANTMARKER"), mark("NOTEMARKER")
	bogusDevice, bogusAdmin := "cs_"+mark("BOGUSDEVICE"), "cs_"+mark("BOGUSADMIN")

	d.mustAdmin(t, "user", "add", user, "--role", "caseworker", "--areas", "Zuilen")
	id, token := d.enroll(t, user, label)
	adminToken, err := os.ReadFile(d.TokenFile())
	if err != nil {
		t.Fatal(err)
	}

	clock := syncproto.NewClock(nil, 0)
	c, _ := servertest.Handshake(t, d.WS, id, token, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](c)
	created := newEntry(2, clock, "note1", "case1", user, note)
	ack := push(t, c, newCase(1, clock, "case1", "Zuilen", tenant), created)
	if len(ack.Accepted) != 2 {
		t.Fatalf("ack = %+v, want both accepted", ack)
	}
	// Rejections, each carrying a marker: out of scope, unknown case,
	// another author, a bad value, a reused sequence number.
	badValue := newEntry(6, clock, "note4", "case1", user, "x")
	badValue.Fields["text"] = syncproto.Write{Data: raw(`["` + note + `"]`)}
	reused := newEntry(2, clock, "note1", "case1", user, note+" edited")
	ack = push(t, c,
		newCase(3, clock, "case2", "Ondiep", tenant),
		newEntry(4, clock, "note2", "nocase", user, note),
		newEntry(5, clock, "note3", "case1", "someoneelse", note),
		badValue, reused)
	if len(ack.Accepted) != 0 || len(ack.Rejected) != 5 {
		t.Fatalf("ack = %+v, want 5 rejections", ack)
	}
	for _, r := range ack.Rejected {
		if strings.Contains(r.Message, note) || strings.Contains(r.Message, tenant) {
			t.Errorf("rejection message holds record content: %+v", r)
		}
	}

	// Bad frames carrying the note, each on its own connection.
	for _, tc := range []struct {
		name string
		typ  int
		data []byte
	}{
		{"malformed JSON", websocket.BinaryMessage, frame(syncproto.TypePush, `{"changes":[{"seq":9,"coll":"entries","id":"n9","fields":{"text":{"val":"`+note+`"}}}`)},
		{"text message", websocket.TextMessage, []byte(note)},
		{"wrong field type", websocket.BinaryMessage, frame(syncproto.TypePush, `{"changes":[{"seq":"`+note+`"}]}`)},
	} {
		bad, _ := servertest.Handshake(t, d.WS, id, token, nil)
		servertest.Until[*syncproto.CaughtUp](bad)
		bad.SendRaw(tc.typ, tc.data)
		errs, code := bad.ExpectClose()
		if code != syncproto.CloseProtocol {
			t.Errorf("%s: close code %d, want %d", tc.name, code, syncproto.CloseProtocol)
		}
		for _, e := range errs {
			if strings.Contains(e.Message, note) {
				t.Errorf("%s: error message holds the note: %+v", tc.name, e)
			}
		}
	}
	// Bad tokens.
	if _, resp, err := servertest.Dial(t, d.WS, bogusDevice); err == nil {
		t.Error("an unknown device token opened a WebSocket")
	} else if resp != nil {
		resp.Body.Close()
	}
	badTok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(badTok, []byte(bogusAdmin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runIn(t, "", nil, "admin", "--server", d.URL, "--token-file", badTok, "user", "list"); r.Code == 0 {
		t.Error("a wrong admin token was accepted")
	}
	d.mustAdmin(t, "user", "set-areas", user, "--areas", "Zuilen,Ondiep")
	servertest.Until[*syncproto.ScopeUpdate](c)
	d.mustAdmin(t, "device", "revoke", id)
	if _, code := c.ExpectClose(); code != syncproto.CloseRevoked {
		t.Errorf("revoked session closed with %d", code)
	}
	d.stop(t)

	out := d.Output()
	// The run did log: the check below is not vacuous.
	for _, want := range []string{"session started", "push partly rejected", "session ended", "admin: device revoked"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q; the debug run logged:\n%s", want, out)
		}
	}
	for what, secret := range map[string]string{
		"note text":            note,
		"tenant name":          tenant,
		"device token":         token,
		"admin token":          strings.TrimSpace(string(adminToken)),
		"unknown device token": bogusDevice,
		"wrong admin token":    bogusAdmin,
		"user name":            user,
		"device label":         label,
	} {
		if strings.Contains(out, secret) {
			t.Errorf("casesyncd's output contains the %s", what)
		}
	}
}

// TestMetrics checks /metrics after pushes: accepted and rejected change
// counts, and connected devices while a session is open and after.
func TestMetrics(t *testing.T) {
	d := start(t, t.TempDir())
	d.mustAdmin(t, "user", "add", "anouk", "--role", "caseworker", "--areas", "Zuilen")
	id, token := d.enroll(t, "anouk", "laptop")
	const (
		accepted  = `casesync_changes_total{result="accepted"}`
		scope     = `casesync_changes_total{result="scope"}`
		connected = `casesync_connected_devices`
		closed    = `casesync_sessions_closed_total{reason="normal"}`
	)
	metrics := func() string {
		t.Helper()
		status, body := get(t, d.URL+"/metrics")
		if status != http.StatusOK {
			t.Fatalf("GET /metrics = %d", status)
		}
		return body
	}
	expect := func(body, series string, want float64) {
		t.Helper()
		if got, ok := metric(body, series); !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	body := metrics()
	expect(body, connected, 0)
	if v, ok := metric(body, accepted); ok && v != 0 {
		t.Errorf("%s = %v before any push", accepted, v)
	}

	clock := syncproto.NewClock(nil, 0)
	c, _ := servertest.Handshake(t, d.WS, id, token, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](c)
	var seq uint64
	next := func() uint64 { seq++; return seq }
	pushes := [][]syncproto.Change{
		{newCase(next(), clock, "case1", "Zuilen", "J. Jansen"), newEntry(next(), clock, "n1", "case1", "anouk", "one")},
		{newEntry(next(), clock, "n2", "case1", "anouk", "two"), newEntry(next(), clock, "n3", "case1", "anouk", "three")},
		{newEntry(next(), clock, "n4", "case1", "anouk", "four"), newCase(next(), clock, "case2", "Ondiep", "P. Pietersen")},
	}
	var nAccepted, nRejected int
	for _, p := range pushes {
		ack := push(t, c, p...)
		nAccepted += len(ack.Accepted)
		nRejected += len(ack.Rejected)
	}
	if nAccepted != 5 || nRejected != 1 {
		t.Fatalf("pushes: %d accepted, %d rejected, want 5 and 1", nAccepted, nRejected)
	}
	body = metrics()
	expect(body, accepted, 5)
	expect(body, scope, 1)
	expect(body, connected, 1)

	// After the device closes, the gauge returns to 0 and the session is
	// counted as closed normally. One scrape is not an atomic snapshot of
	// all series, so poll until both show.
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		body = metrics()
		v, ok := metric(body, connected)
		n, _ := metric(body, closed)
		if ok && v == 0 && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the session closed: %s = %v, %s = %v, want 0 and 1", connected, v, closed, n)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	expect(body, accepted, 5)
	if t.Failed() {
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "casesync_") {
				t.Log(strings.TrimSpace(line))
			}
		}
	}
	d.stop(t)
}
