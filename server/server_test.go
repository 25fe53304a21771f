package server_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

// device is a test device: its raw connection and change numbering.
type device struct {
	id, token string
	seq       uint64
	clock     *syncproto.Clock
}

func newDevice(t testing.TB, s *servertest.Server, user string) *device {
	t.Helper()
	id, tok := s.Enroll(user)
	return &device{id: id, token: tok, clock: syncproto.NewClock(nil, 0)}
}

func (d *device) connect(t testing.TB, s *servertest.Server, hello *syncproto.Hello) (*servertest.Conn, *syncproto.Welcome) {
	t.Helper()
	return servertest.Handshake(t, s.WS, d.id, d.token, hello)
}

func raw(s string) json.RawMessage { return json.RawMessage(s) }

// newCase returns a change creating a case in area.
func (d *device) newCase(id, area string) syncproto.Change {
	d.seq++
	return syncproto.Edit(nil, syncproto.Cases, id, d.seq, d.clock.Now(), map[string]json.RawMessage{
		"title": raw(`"Leaking roof"`), "area": raw(`"` + area + `"`), "status": raw(`"open"`), "tenant": raw(`"J. Jansen"`),
	})
}

// newEntry returns a change adding a visit note to a case.
func (d *device) newEntry(id, caseID, author, text string) syncproto.Change {
	d.seq++
	return syncproto.Edit(nil, syncproto.Entries, id, d.seq, d.clock.Now(), map[string]json.RawMessage{
		"case_id": raw(`"` + caseID + `"`), "kind": raw(`"visit"`), "author": raw(`"` + author + `"`),
		"occurred_at": raw(`"2026-11-28"`), "text": raw(`"` + text + `"`),
	})
}

// edit returns a change setting fields of cur.
func (d *device) edit(cur *syncproto.Record, fields map[string]json.RawMessage) syncproto.Change {
	d.seq++
	return syncproto.Edit(cur, cur.Collection, cur.ID, d.seq, d.clock.Now(), fields)
}

func push(t testing.TB, c *servertest.Conn, changes ...syncproto.Change) *syncproto.Ack {
	t.Helper()
	ack, _ := pushCollect(t, c, changes...)
	return ack
}

// pushCollect pushes and returns the ack and the messages that arrived before it.
func pushCollect(t testing.TB, c *servertest.Conn, changes ...syncproto.Change) (*syncproto.Ack, []syncproto.Message) {
	t.Helper()
	c.Send(&syncproto.Push{Changes: changes})
	return servertest.Until[*syncproto.Ack](c)
}

func evictions(msgs []syncproto.Message, into map[string]bool) {
	for _, m := range msgs {
		if ch, ok := m.(*syncproto.Changes); ok {
			for _, e := range ch.Evicted {
				into[e.ID] = true
			}
		}
	}
}

// pullAll connects with a fresh checkpoint and returns every record sent
// up to caught_up.
func pullAll(t *testing.T, s *servertest.Server, d *device) map[syncproto.Key]syncproto.Record {
	t.Helper()
	c, _ := d.connect(t, s, nil)
	defer c.Close()
	_, before := servertest.Until[*syncproto.CaughtUp](c)
	out := map[syncproto.Key]syncproto.Record{}
	for _, m := range before {
		if ch, ok := m.(*syncproto.Changes); ok {
			for _, r := range ch.Records {
				out[r.Key()] = r
			}
			for _, e := range ch.Evicted {
				delete(out, e.Key())
			}
		}
	}
	return out
}

func setup(t *testing.T) *servertest.Server {
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	s.AddUser("chantal", "caseworker", "Ondiep")
	s.AddUser("lead", "lead")
	return s
}

func TestServer_Health(t *testing.T) {
	s := servertest.NewServer(t, nil)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", path, resp.StatusCode)
		}
	}
}

func TestServer_UpgradeAuth(t *testing.T) {
	s := setup(t)
	d := newDevice(t, s, "anouk")
	s.Revoke(d.id)
	for _, tc := range []struct {
		name, token string
		code        syncproto.Code
	}{
		{"no token", "", syncproto.CodeAuth},
		{"unknown token", "cs_nonsense", syncproto.CodeAuth},
		{"revoked", d.token, syncproto.CodeRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := servertest.Dial(t, s.WS, tc.token)
			if err == nil {
				t.Fatal("upgrade succeeded, want 401")
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401", resp.StatusCode)
			}
			var e syncproto.Error
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatal(err)
			}
			if e.Code != tc.code {
				t.Errorf("code = %q, want %q", e.Code, tc.code)
			}
		})
	}
}

func TestServer_LargeAuthHeader(t *testing.T) {
	s := setup(t)
	h := http.Header{}
	h.Set("Authorization", "Bearer cs_"+strings.Repeat("x", 12<<10))
	_, resp, err := websocket.DefaultDialer.Dial(s.WS, h)
	if err == nil {
		t.Fatal("upgrade with an unknown 12 KiB token succeeded")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status = %d, want 401 (not 431: headers up to 16 KiB are accepted)", resp.StatusCode)
	}
}

func TestServer_PushAndFanOut(t *testing.T) {
	s := setup(t)
	a, b, c, lead := newDevice(t, s, "anouk"), newDevice(t, s, "bram"), newDevice(t, s, "chantal"), newDevice(t, s, "lead")
	ca, _ := a.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](ca)
	cb, _ := b.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](cb)
	cl, _ := lead.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](cl)

	ack := push(t, ca, a.newCase("case1", "Zuilen"), a.newEntry("note1", "case1", "anouk", "visited, roof leaks"))
	if len(ack.Accepted) != 2 || len(ack.Rejected) != 0 {
		t.Fatalf("ack = %+v, want both accepted", ack)
	}
	for name, conn := range map[string]*servertest.Conn{"bram": cb, "lead": cl} {
		got := map[syncproto.Key]bool{}
		for len(got) < 2 {
			ch, _ := servertest.Until[*syncproto.Changes](conn)
			for _, r := range ch.Records {
				got[r.Key()] = true
			}
		}
		if !got[syncproto.Key{Collection: syncproto.Entries, ID: "note1"}] {
			t.Errorf("%s did not receive the note", name)
		}
	}
	// Chantal sees Ondiep only: a fresh pull holds nothing of Zuilen.
	if got := pullAll(t, s, c); len(got) != 0 {
		t.Errorf("chantal received %d records of another area", len(got))
	}
	if got := pullAll(t, s, lead); len(got) != 2 {
		t.Errorf("lead pulled %d records, want 2", len(got))
	}
}

func TestServer_PushIdempotentAndPartial(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	conn, _ := a.connect(t, s, nil)
	create := a.newCase("case1", "Zuilen")
	if ack := push(t, conn, create); len(ack.Accepted) != 1 {
		t.Fatalf("ack = %+v", ack)
	}
	head := func() uint64 {
		w := pullHead(t, s, a)
		return w
	}
	before := head()
	// Resending the same change is accepted and changes nothing.
	if ack := push(t, conn, create); len(ack.Accepted) != 1 || ack.Seq != before {
		t.Fatalf("resend ack = %+v, want accepted at seq %d", ack, before)
	}
	// Reusing the sequence number with other content is rejected.
	forged := create
	forged.Fields = map[string]syncproto.Write{"title": {Data: raw(`"Other"`)}, "area": {Data: raw(`"Zuilen"`)}, "status": {Data: raw(`"open"`)}}
	ack := push(t, conn, forged)
	if len(ack.Rejected) != 1 || !errors.Is(&ack.Rejected[0], syncproto.ErrBadChange) {
		t.Fatalf("forged resend ack = %+v, want bad_change", ack)
	}
	// A batch with one good, one out-of-scope and one invalid change.
	good := a.newCase("case2", "Zuilen")
	outside := a.newCase("case3", "Ondiep")
	invalid := a.newEntry("note1", "nope", "anouk", "x")
	ack = push(t, conn, good, outside, invalid)
	if !slices.Equal(ack.Accepted, []uint64{good.Seq}) || len(ack.Rejected) != 2 {
		t.Fatalf("ack = %+v, want only %d accepted", ack, good.Seq)
	}
	if !errors.Is(&ack.Rejected[0], syncproto.ErrOutOfScope) || ack.Rejected[0].Change != outside.Seq {
		t.Errorf("rejection 0 = %+v, want scope for change %d", ack.Rejected[0], outside.Seq)
	}
	if !errors.Is(&ack.Rejected[1], syncproto.ErrUnknownCase) || ack.Rejected[1].Change != invalid.Seq {
		t.Errorf("rejection 1 = %+v, want unknown_case for change %d", ack.Rejected[1], invalid.Seq)
	}
	conn.Close()
	got := pullAll(t, s, newDevice(t, s, "lead"))
	if len(got) != 2 {
		t.Errorf("server holds %d records, want case1 and case2 only: %v", len(got), slices.Collect(mapKeys(got)))
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// pullHead returns the log head a welcome reports.
func pullHead(t *testing.T, s *servertest.Server, d *device) uint64 {
	t.Helper()
	c, w := d.connect(t, s, nil)
	c.Close()
	return w.Seq
}

func TestServer_BadInput(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	codec, _ := syncproto.NewCodec(0)
	defer codec.Close()
	hello := func() []byte {
		f, _ := codec.Encode(&syncproto.Hello{Version: syncproto.Version, Device: a.id}, false)
		return f
	}
	for _, tc := range []struct {
		name   string
		frames func() [][]byte
		typ    int
		want   *syncproto.Error
		close  int
	}{
		{"push before hello", func() [][]byte {
			f, _ := codec.Encode(&syncproto.Push{Changes: []syncproto.Change{a.newCase("x", "Zuilen")}}, false)
			return [][]byte{f}
		}, websocket.BinaryMessage, syncproto.ErrUnexpected, syncproto.CloseProtocol},
		{"too old", func() [][]byte {
			f, _ := codec.Encode(&syncproto.Hello{Version: 0, Device: a.id}, false)
			return [][]byte{f}
		}, websocket.BinaryMessage, syncproto.ErrTooOldVersion, syncproto.CloseVersion},
		{"unknown version", func() [][]byte {
			f, _ := codec.Encode(&syncproto.Hello{Version: syncproto.Version + 1, Device: a.id}, false)
			return [][]byte{f}
		}, websocket.BinaryMessage, syncproto.ErrUnknownVersion, syncproto.CloseVersion},
		{"other device", func() [][]byte {
			f, _ := codec.Encode(&syncproto.Hello{Version: syncproto.Version, Device: "someoneelse"}, false)
			return [][]byte{f}
		}, websocket.BinaryMessage, &syncproto.Error{Code: syncproto.CodeAuth}, syncproto.CloseAuth},
		{"truncated frame", func() [][]byte { return [][]byte{{1, 0}} }, websocket.BinaryMessage, syncproto.ErrMalformed, syncproto.CloseProtocol},
		{"garbage after hello", func() [][]byte { return [][]byte{hello(), {4, 0, 0, 0, 0, 3, '{', 'x', '}'}} }, websocket.BinaryMessage, syncproto.ErrMalformed, syncproto.CloseProtocol},
		{"hello twice", func() [][]byte { return [][]byte{hello(), hello()} }, websocket.BinaryMessage, syncproto.ErrUnexpected, syncproto.CloseProtocol},
		{"declared too large", func() [][]byte { return [][]byte{hello(), {4, 0, 0x7f, 0, 0, 0}} }, websocket.BinaryMessage, syncproto.ErrFrameTooLarge, syncproto.CloseTooLarge},
		{"compressed before negotiated", func() [][]byte { return [][]byte{hello(), {4, 1, 0, 0, 0, 1, 0}} }, websocket.BinaryMessage, syncproto.ErrCompression, syncproto.CloseProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := servertest.Dial(t, s.WS, a.token)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tc.frames() {
				c.SendRaw(tc.typ, f)
			}
			errs, code := c.ExpectClose()
			if code != tc.close {
				t.Errorf("close code = %d, want %d", code, tc.close)
			}
			if len(errs) == 0 || !errors.Is(errs[len(errs)-1], tc.want) {
				t.Errorf("errors = %v, want %v", errs, tc.want)
			}
		})
	}
	// The server keeps serving: a good session still works, nothing was stored.
	if got := pullAll(t, s, a); len(got) != 0 {
		t.Errorf("bad input stored %d records", len(got))
	}
}

func TestServer_UnknownMessageSkipped(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](c)
	c.SendRaw(websocket.BinaryMessage, []byte{200, 0, 0, 0, 0, 2, '{', '}'})
	if ack := push(t, c, a.newCase("case1", "Zuilen")); len(ack.Accepted) != 1 {
		t.Fatalf("after an unknown message, ack = %+v", ack)
	}
}

func TestServer_DecompressionBomb(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	// 64 MiB of zeros compresses to a few KiB; declare a small length.
	zeros := make([]byte, 64<<20)
	z, _ := syncproto.NewCodec(0)
	defer z.Close()
	bomb := compressZstd(t, zeros)
	frame := append([]byte{4, 1, 0, 0, 0x10, 0}, bomb...)
	c.SendRaw(websocket.BinaryMessage, frame)
	errs, code := c.ExpectClose()
	if code != syncproto.CloseTooLarge || len(errs) == 0 || !errors.Is(errs[0], syncproto.ErrFrameTooLarge) {
		t.Fatalf("bomb: errors %v close %d, want too_large", errs, code)
	}
}

func TestServer_Revoke(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](c)
	s.Revoke(a.id)
	errs, code := c.ExpectClose()
	if code != syncproto.CloseRevoked || len(errs) != 1 || errs[0].Code != syncproto.CodeRevoked {
		t.Fatalf("revoked: errors %v close %d", errs, code)
	}
}

func TestServer_ScopeChange(t *testing.T) {
	s := setup(t)
	a, c := newDevice(t, s, "anouk"), newDevice(t, s, "chantal")
	ca, _ := a.connect(t, s, nil)
	push(t, ca, a.newCase("z1", "Zuilen"))
	ca.Close()
	cc, _ := c.connect(t, s, nil)
	push(t, cc, c.newCase("o1", "Ondiep"))
	cc.Close()

	conn, _ := a.connect(t, s, &syncproto.Hello{Live: true})
	first, _ := servertest.Until[*syncproto.CaughtUp](conn)
	s.SetAreas("anouk", "Ondiep")
	up, _ := servertest.Until[*syncproto.ScopeUpdate](conn)
	if !slices.Equal(up.Lost, []string{"Zuilen"}) || !up.Scope.Contains("Ondiep") {
		t.Fatalf("scope update = %+v", up)
	}
	ch, _ := servertest.Until[*syncproto.Changes](conn)
	if len(ch.Records) != 1 || ch.Records[0].ID != "o1" {
		t.Fatalf("gained area sent %+v, want case o1", ch.Records)
	}
	conn.Close()
	// Resuming from the old checkpoint also reports the lost area.
	conn, _ = a.connect(t, s, &syncproto.Hello{Checkpoint: first.Checkpoint})
	up, _ = servertest.Until[*syncproto.ScopeUpdate](conn)
	if !slices.Equal(up.Lost, []string{"Zuilen"}) {
		t.Errorf("resume: scope update = %+v, want Zuilen lost", up)
	}
}

// pushCaseWithNotes pushes, from anouk's device d, case1 in Zuilen with
// notes n1 and n2, and returns the change that created the case.
func pushCaseWithNotes(t *testing.T, s *servertest.Server, d *device) syncproto.Change {
	t.Helper()
	c, _ := d.connect(t, s, nil)
	defer c.Close()
	create := d.newCase("case1", "Zuilen")
	push(t, c, create, d.newEntry("n1", "case1", "anouk", "one"), d.newEntry("n2", "case1", "anouk", "two"))
	return create
}

func TestServer_CaseMove(t *testing.T) {
	s := setup(t)
	a, c := newDevice(t, s, "anouk"), newDevice(t, s, "chantal")
	create := pushCaseWithNotes(t, s, a)
	cc, _ := c.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](cc)

	// Anouk hands the case over to Ondiep (the tenant was rehoused).
	ca, _ := a.connect(t, s, &syncproto.Hello{Live: true})
	if _, before := servertest.Until[*syncproto.CaughtUp](ca); len(before) == 0 {
		t.Fatal("anouk's backlog is empty, want her case and entries")
	}
	// A note Anouk wrote offline before the move, pushed after it.
	offline := a.newEntry("n3", "case1", "anouk", "written offline before the move")
	cur := create.State(a.id)
	evicted := map[string]bool{}
	ack, before := pushCollect(t, ca, a.edit(cur, map[string]json.RawMessage{"area": raw(`"Ondiep"`)}))
	if len(ack.Accepted) != 1 {
		t.Fatalf("move ack = %+v", ack)
	}
	evictions(before, evicted)
	ack, before = pushCollect(t, ca, offline)
	if len(ack.Accepted) != 1 {
		t.Fatalf("offline note written before the move: ack = %+v, want accepted", ack)
	}
	evictions(before, evicted)
	// A note written after the move is outside her scope now.
	ack, before = pushCollect(t, ca, a.newEntry("n4", "case1", "anouk", "too late"))
	if len(ack.Rejected) != 1 || ack.Rejected[0].Code != syncproto.CodeScope {
		t.Fatalf("note written after the move: ack = %+v, want scope", ack)
	}
	evictions(before, evicted)
	// Chantal receives the case and both entries.
	got := map[string]string{}
	for len(got) < 4 {
		ch, _ := servertest.Until[*syncproto.Changes](cc)
		for _, r := range ch.Records {
			got[r.ID] = r.Area
		}
	}
	for _, id := range []string{"case1", "n1", "n2", "n3"} {
		if got[id] != "Ondiep" {
			t.Errorf("chantal has %s in area %q, want Ondiep", id, got[id])
		}
	}
	// Anouk is told to evict the case and the entries she held.
	for !evicted["case1"] || !evicted["n1"] || !evicted["n2"] {
		ch, _ := servertest.Until[*syncproto.Changes](ca)
		evictions([]syncproto.Message{ch}, evicted)
	}
	// A fresh pull by Anouk holds nothing.
	if got := pullAll(t, s, a); len(got) != 0 {
		t.Errorf("anouk still pulls %d records after the move", len(got))
	}
}

func TestServer_RestartKeepsAcknowledged(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	var changes []syncproto.Change
	changes = append(changes, a.newCase("case1", "Zuilen"))
	for i := range 50 {
		changes = append(changes, a.newEntry("n"+string(rune('a'+i%26))+string(rune('a'+i/26)), "case1", "anouk", "note"))
	}
	if ack := push(t, c, changes...); len(ack.Accepted) != 51 {
		t.Fatalf("ack = %+v", ack)
	}
	c.Close()
	s.Restart()
	if got := pullAll(t, s, a); len(got) != 51 {
		t.Fatalf("after restart the server holds %d records, want 51", len(got))
	}
}

func TestServer_ShutdownClosesSessions(t *testing.T) {
	s := setup(t)
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, &syncproto.Hello{Live: true})
	servertest.Until[*syncproto.CaughtUp](c)
	stopped := make(chan struct{})
	go func() { defer close(stopped); s.Stop() }()
	_, code := c.ExpectClose()
	<-stopped
	if code != syncproto.CloseGoingAway {
		t.Fatalf("close code = %d, want 1001", code)
	}
}

func TestServer_Flood(t *testing.T) {
	s := servertest.NewServer(t, &servertest.Options{})
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t, s, "anouk")
	c, _ := a.connect(t, s, nil)
	unknown := []byte{200, 0, 0, 0, 0, 2, '{', '}'}
	for range 2000 {
		if err := c.WS.WriteMessage(websocket.BinaryMessage, unknown); err != nil {
			break // the server may already have closed
		}
	}
	errs, code := c.ExpectClose()
	if code != syncproto.CloseRate || len(errs) == 0 || errs[len(errs)-1].Code != syncproto.CodeRate {
		t.Fatalf("flood: errors %v close %d, want rate", errs, code)
	}
}

// TestServer_LostHandOverRefilesJournal: anouk, offline, hands a case over
// to Ondiep; the lead, concurrently and later, writes its area as Zuilen,
// where it is. The lead's value wins and the case stays in Zuilen. Anouk's
// laptop, which had not seen the lead's write, concludes from its own that
// the case left and drops its journal once her move is acknowledged; so
// the server files the entries again after her change, and a pull from
// where her laptop stood brings them back (found by seed 750,
// internal/simtest).
func TestServer_LostHandOverRefilesJournal(t *testing.T) {
	s := setup(t)
	a, l := newDevice(t, s, "anouk"), newDevice(t, s, "lead")
	create := pushCaseWithNotes(t, s, a)

	cur := create.State(a.id)
	move := a.edit(cur, map[string]json.RawMessage{"area": raw(`"Ondiep"`)})
	a.seq++ // the lead's write is later, and has not seen anouk's move
	l.seq++
	keep := syncproto.Edit(cur, syncproto.Cases, "case1", l.seq, move.Stamp+1<<syncproto.LogicalBits, map[string]json.RawMessage{"area": raw(`"Zuilen"`)})
	cl, w := l.connect(t, s, nil)
	servertest.Until[*syncproto.CaughtUp](cl)
	ack := push(t, cl, keep)
	cl.Close()
	if len(ack.Accepted) != 1 {
		t.Fatalf("lead's write: ack %+v", ack)
	}
	ca, _ := a.connect(t, s, &syncproto.Hello{Checkpoint: syncproto.Checkpoint{Epoch: w.Epoch, Seq: ack.Seq, Areas: []string{"Zuilen"}}})
	ackA, _ := pushCollect(t, ca, move)
	if len(ackA.Accepted) != 1 {
		t.Fatalf("anouk's move: ack %+v", ackA)
	}
	ca.Close()

	// From where anouk's laptop stood (the lead's write included, her own
	// push not yet seen): the case, in Zuilen, and both entries again.
	ca, _ = a.connect(t, s, &syncproto.Hello{Checkpoint: syncproto.Checkpoint{Epoch: w.Epoch, Seq: ack.Seq, Areas: []string{"Zuilen"}}})
	defer ca.Close()
	_, before := servertest.Until[*syncproto.CaughtUp](ca)
	got := map[string]string{}
	for _, m := range before {
		if ch, ok := m.(*syncproto.Changes); ok {
			for _, r := range ch.Records {
				got[r.ID] = r.Area
			}
			for _, e := range ch.Evicted {
				t.Errorf("anouk is told to evict %s, which stays in Zuilen", e.Key())
			}
		}
	}
	for _, id := range []string{"case1", "n1", "n2"} {
		if got[id] != "Zuilen" {
			t.Errorf("after her lost hand-over anouk pulls %s in %q, want Zuilen (got %v)", id, got[id], got)
		}
	}
}
