package server_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

func TestServer_OversizedFrame(t *testing.T) {
	s := servertest.NewServer(t, &servertest.Options{Config: server.Config{MaxPayload: 64 << 10}})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t, s, "anouk")
	c, w := a.connect(t, s, nil)
	if w.Limits.MaxPayload != 64<<10 {
		t.Fatalf("welcome limits = %+v, want max_payload 65536", w.Limits)
	}
	frame := make([]byte, syncproto.HeaderLen+200<<10) // over the read limit, within TCP buffers
	frame[0] = byte(syncproto.TypePush)
	_ = c.WS.WriteMessage(websocket.BinaryMessage, frame)
	errs, code := c.ExpectClose()
	if code != syncproto.CloseTooLarge && code != websocket.CloseMessageTooBig {
		t.Fatalf("close code = %d, want %d or 1009 (errors %v)", code, syncproto.CloseTooLarge, errs)
	}
	// The server is still serving.
	if got := pullAll(t, s, a); len(got) != 0 {
		t.Fatalf("pulled %d records", len(got))
	}
}

func TestServer_TextMessage(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	c.SendRaw(websocket.TextMessage, []byte(`{"push":[]}`))
	errs, code := c.ExpectClose()
	if code != syncproto.CloseProtocol || len(errs) == 0 || !errors.Is(errs[len(errs)-1], syncproto.ErrMalformed) {
		t.Fatalf("text message: errors %v close %d, want malformed", errs, code)
	}
}

func TestServer_ConnectionsPerDevice(t *testing.T) {
	s := servertest.NewServer(t, &servertest.Options{Config: server.Config{MaxConnsPerDevice: 2}})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t, s, "anouk")
	for range 2 {
		c, _ := a.connect(t, s, &syncproto.Hello{Live: true})
		servertest.Until[*syncproto.CaughtUp](c)
	}
	c, _, err := servertest.Dial(t, s.WS, a.token)
	if err != nil {
		t.Fatal(err)
	}
	errs, code := c.ExpectClose()
	if code != syncproto.CloseRate || len(errs) != 1 || errs[0].Reason != "connections" {
		t.Fatalf("third connection: errors %v close %d, want rate/connections", errs, code)
	}
}

// A peer that stops answering pings is dropped by the read deadline, not
// left holding a session (Fiber's idle timeouts do not apply after the
// upgrade).
func TestServer_DeadPeerDropped(t *testing.T) {
	s := servertest.NewServer(t, &servertest.Options{Config: server.Config{PingInterval: 50 * time.Millisecond, ReadTimeout: 300 * time.Millisecond}})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](c)
	c.WS.SetPingHandler(func(string) error { return nil }) // play dead: no pongs
	_, err := c.Next(10 * time.Second)
	if err == nil {
		t.Fatal("a silent peer kept its session")
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
		t.Fatalf("dropped with %d, want an abnormal close", ce.Code)
	}
}

func TestServer_Metrics(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	push(t, c, a.newCase("c1", "Zuilen"), a.newCase("c2", "Zuilen"), a.newCase("c3", "Ondiep"))
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`casesync_changes_total{result="accepted"} 2`,
		`casesync_changes_total{result="scope"} 1`,
		`casesync_connected_devices 1`,
		`casesync_batch_commit_seconds_count 1`,
		`casesync_bytes_total{direction="in"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestServer_AdminAuth(t *testing.T) {
	s := setup(t)
	for _, tok := range []string{"", "cs_wrong"} {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/v1/admin/users", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("admin with token %q = %d, want 401", tok, resp.StatusCode)
		}
	}
	if st, _ := s.AdminStatus(http.MethodPost, "/v1/admin/users", map[string]any{"name": "x", "role": "boss"}, nil); st != http.StatusBadRequest {
		t.Errorf("bad role = %d, want 400", st)
	}
	if st, _ := s.AdminStatus(http.MethodPost, "/v1/admin/devices", map[string]any{"user": "nobody"}, nil); st != http.StatusBadRequest {
		t.Errorf("enroll for unknown user = %d, want 400", st)
	}
	var devs []server.DeviceInfo
	newDevice(t, s, "anouk")
	s.Admin(http.MethodGet, "/v1/admin/devices", nil, &devs)
	if len(devs) != 1 || devs[0].User != "anouk" {
		t.Fatalf("devices = %+v", devs)
	}
}

// A change that breaks the change rules is rejected alone; the session and
// the rest of the push go on.
func TestServer_BadChangeRejectedAlone(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	bad := a.newCase("c1", "Zuilen")
	bad.Collection = "notes"
	good := a.newCase("c2", "Zuilen")
	ack := push(t, c, bad, good)
	if len(ack.Accepted) != 1 || ack.Accepted[0] != good.Seq || len(ack.Rejected) != 1 || !errors.Is(&ack.Rejected[0], syncproto.ErrUnknownCollection) {
		t.Fatalf("ack = %+v, want the good change accepted and the bad one rejected as unknown_collection", ack)
	}
	if ack := push(t, c, a.newCase("c3", "Zuilen")); len(ack.Accepted) != 1 {
		t.Fatalf("session did not go on: %+v", ack)
	}
}
