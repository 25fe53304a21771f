package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// scriptAckAt delivers the ack of the session's first push after the
// first k messages the server's streamer sent after the welcome (scope
// update, changes, caught_up), whichever the server sent first: its push
// handler and its streamer send independently, and the scheduler may put
// the ack anywhere among them. k 0 puts the ack right after the welcome;
// a k past the stream's length puts it after caught_up.
func scriptAckAt(k int) func() Script {
	return func() Script {
		welcomed, acked, ended := false, false, false
		streamed := 0
		return func(m syncproto.Message) Verdict {
			switch m.(type) {
			case *syncproto.Welcome:
				welcomed = true
				return Pass
			case *syncproto.Ack:
				switch {
				case acked:
					return Pass
				case streamed < k && !ended:
					acked = true
					return Hold // until the k-th stream message
				}
				acked = true
				return Release // ahead of the stream held for it
			}
			if !welcomed {
				return Pass
			}
			streamed++
			_, last := m.(*syncproto.CaughtUp)
			ended = ended || last
			switch {
			case acked && (streamed == k || last):
				return Release // the k-th, then the ack held for it
			case acked:
				return Pass
			case streamed > k:
				return Hold // until the ack
			}
			return Pass
		}
	}
}

// scriptLoseAck delivers the welcome and nothing else, and cuts the
// session when the server acknowledges a push: the push is committed, the
// device does not know.
func scriptLoseAck() Script {
	return func(m syncproto.Message) Verdict {
		switch m.(type) {
		case *syncproto.Welcome:
			return Pass
		case *syncproto.Ack:
			return Cut
		}
		return Hold
	}
}

// order is one way the relay delivers a device's sessions after its first
// (which passes everything): each scripted session in turn, the last
// putting the ack of its first push at ackAt among the stream's messages
// (-1: after caught_up).
type order struct {
	name     string
	sessions []func() Session
	ackAt    int
}

// orders lists the ack at every place among a session's stream, alone and
// after a session whose ack was lost. With pushAfterBacklog the server
// reads each session's backlog before its push commits.
func orders(pushAfterBacklog bool) []order {
	at := func(k int) func() Session {
		return func() Session { return Session{Server: scriptAckAt(k)(), PushAfterBacklog: pushAfterBacklog} }
	}
	lose := func() Session { return Session{Server: scriptLoseAck(), PushAfterBacklog: pushAfterBacklog} }
	places := []struct {
		name string
		k    int
		want int
	}{
		{"ack first", 0, 0},
		{"ack after the scope update", 1, 1},
		{"ack after the backlog", 2, 2},
		{"ack after caught_up", 9, -1},
	}
	out := []order{{name: "as it comes"}}
	for _, p := range places {
		out = append(out, order{p.name, []func() Session{at(p.k)}, p.want})
	}
	for _, p := range places {
		out = append(out, order{"ack lost, then " + p.name, []func() Session{lose, at(p.k)}, p.want})
	}
	return out
}

// relay starts a relay that treats the device's sessions in this order.
func (o order) relay(t *testing.T, target string) *Relay {
	t.Helper()
	r, err := NewRelay(target, func(n int) Session {
		if i := n - 2; i >= 0 && i < len(o.sessions) {
			return o.sessions[i]()
		}
		return Session{}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// sync runs c's scripted sessions (or one as it comes), then check, then
// one more sync as it comes, which must change nothing, and check again.
// It checks that the relay delivered the order asked for: the welcome, the
// scope update first in the stream if scope, the ack where the script put
// it.
func (o order) sync(t *testing.T, c *client.Client, r *Relay, scope bool, check func(after string)) {
	t.Helper()
	before := r.Sessions()
	if len(o.sessions) == 0 {
		mustSync(t, c)
	}
	for i := range o.sessions {
		_, err := c.Sync(context.Background(), nil)
		last := i == len(o.sessions)-1
		if !last && !errors.Is(err, client.ErrUnreachable) {
			t.Fatalf("sync through a cut session: %v; want ErrUnreachable", err)
		}
		if last && err != nil {
			t.Fatalf("sync: %v", err)
		}
	}
	check("after the sync")
	mustSync(t, c)
	check("after one more sync")
	// Each successful Sync may have run one follow-up round to fetch the
	// changes it pushed and could not place (client Sync).
	if n, want := r.Sessions()-before, max(1, len(o.sessions))+1; n < want || n > want+2 {
		t.Fatalf("relayed %d sessions, want %d, or up to 2 more follow-up rounds", n, want)
	}
	if len(o.sessions) == 0 {
		return
	}
	n := before + len(o.sessions)
	got := r.Delivered(n)
	stream := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return s == "ack" })
	ack := slices.Index(got, "ack") - 1
	want := o.ackAt
	if want < 0 {
		want = len(stream) - 1
	}
	if len(stream) < 2 || stream[0] != "welcome" || (stream[1] == "scope") != scope || ack != want {
		t.Fatalf("session %d delivered %v; want welcome, a scope update first in the stream (%v), and the ack after %d stream messages", n, got, scope, want)
	}
}

// A caseworker's laptop, offline, holds a case in Zuilen and writes about
// it: a summary and a note. Meanwhile the lead moves the case to Ondiep and
// the office gives her Ondiep instead of Zuilen. When she syncs, the
// server's ack of her push may come before the scope update and backlog
// that bring the case back in Ondiep. The ack then finds the case, by the
// laptop's last knowledge, outside her new scope; that is not a hand-over
// of hers, and must not make the laptop discard the case's new state and
// her note when they arrive (simulation seed 1463, internal/simtest).
func TestAckBeforeScopeUpdate(t *testing.T) {
	for _, o := range append(orders(false), orders(true)[1:]...) {
		name := o.name
		if len(o.sessions) > 0 && o.sessions[0]().PushAfterBacklog {
			name += ", backlog read first"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := newScopeFixture(t)
			f.s.SetAreas("anouk", "Zuilen")
			relay := o.relay(t, f.s.URL)
			a := openDevice(t, f.s, "anouk", relay.URL(), nil).Client
			mustSync(t, a)
			if ok, err := holdsAll(a, f.zIDs); !ok {
				t.Fatalf("Zuilen not on the device before the test: %v", err)
			}

			// Offline: a summary and a note about the Zuilen case.
			if err := a.SetCase(ctx, f.zCase, map[string]any{"summary": "Neighbours report noise at night."}); err != nil {
				t.Fatal(err)
			}
			note := mustAddEntry(t, a, f.zCase, "Visit: the tenant asks for mediation.")
			// The lead moves the case; the office moves her to Ondiep.
			if err := f.lead.SetCase(ctx, f.zCase, map[string]any{"area": "Ondiep"}); err != nil {
				t.Fatal(err)
			}
			mustSync(t, f.lead)
			f.s.SetAreas("anouk", "Ondiep")

			o.sync(t, a, relay, true, func(after string) {
				// The server has her writes, in Ondiep.
				srvNote, ok := serverRecord(t, f.s, entryKey(note))
				if !ok || srvNote.Area != "Ondiep" {
					t.Fatalf("%s: server: note %v (ok %v); want it in Ondiep", after, srvNote, ok)
				}
				// Her laptop holds the case in Ondiep, her summary, her note
				// and the case's other notes, and nothing is pending.
				v, err := a.Get(ctx, caseKey(f.zCase))
				if err != nil {
					t.Fatalf("%s: the case is not on her laptop: %v", after, err)
				}
				if v.Area != "Ondiep" || v.String(syncproto.FieldSummary) != "Neighbours report noise at night." {
					t.Errorf("%s: case on the device: area %q, summary %q; want Ondiep and her summary", after, v.Area, v.String(syncproto.FieldSummary))
				}
				if ok, err := holdsAll(a, append([]string{note}, f.zIDs...)); !ok {
					t.Errorf("%s: device lacks the case's journal: %v", after, err)
				}
				if ok, err := holdsAll(a, f.oIDs); !ok {
					t.Errorf("%s: device lacks Ondiep's other case: %v", after, err)
				}
				if st := status(t, a); st.Pending != 0 || st.Rejected != 0 {
					t.Errorf("%s: status: %d pending, %d rejected; want none", after, st.Pending, st.Rejected)
				}
			})
		})
	}
}

// A caseworker's laptop holds a case in Ondiep. The lead moves it to
// Zuilen; the laptop, offline, does not know, and hands the case over to
// Lombok (the tenant is rehoused), later than the lead by the clock. The
// office then takes Ondiep from her; she keeps Zuilen. Her hand-over is
// accepted (the case is in Zuilen, hers) and wins. When she syncs, the
// scope update evicts the case, by her laptop's knowledge in Ondiep, while
// her move is still pending; if the ack comes next, before a backlog read
// before the move committed, the laptop must still remember the hand-over
// and not take the case back from that backlog, in Zuilen: the device would
// hold, after a completed sync, a case that is in Lombok (seen in CI).
func TestOwnHandOverAfterScopeLoss(t *testing.T) {
	for _, o := range orders(true) {
		t.Run(o.name, func(t *testing.T) {
			ctx := context.Background()
			s := servertest.NewServer(t, nil)
			s.AddUser("anouk", "caseworker", "Ondiep", "Zuilen")
			s.AddUser("lotte", "lead")
			lead := openClient(t, s, "lotte")
			c := mustCreateCase(t, lead, map[string]any{"area": "Ondiep", "title": "Rehousing request"})
			e := mustAddEntry(t, lead, c, "Intake: the flat is too small.")
			mustSync(t, lead)
			relay := o.relay(t, s.URL)
			clock := &skewedClock{}
			a := openDevice(t, s, "anouk", relay.URL(), clock.tweak).Client
			mustSync(t, a)
			if ok, err := holdsAll(a, []string{c, e}); !ok {
				t.Fatalf("the case is not on her laptop before the test: %v", err)
			}

			if err := lead.SetCase(ctx, c, map[string]any{"area": "Zuilen"}); err != nil {
				t.Fatal(err)
			}
			mustSync(t, lead)
			clock.set(30 * time.Second) // her hand-over is the later write
			if err := a.SetCase(ctx, c, map[string]any{"area": "Lombok"}); err != nil {
				t.Fatal(err)
			}
			s.SetAreas("anouk", "Zuilen")

			o.sync(t, a, relay, true, func(after string) {
				if rec, ok := serverRecord(t, s, caseKey(c)); !ok || rec.Area != "Lombok" {
					t.Fatalf("%s: server: case %v (ok %v); want it in Lombok", after, rec, ok)
				}
				mustNotFind(t, a, c, after+": case handed over to Lombok")
				mustNotFind(t, a, e, after+": its note")
				if st := status(t, a); st.Pending != 0 || st.Rejected != 0 {
					t.Errorf("%s: status: %d pending, %d rejected; want none", after, st.Pending, st.Rejected)
				}
			})
		})
	}
}

// The rehousing cases of PROTOCOL.md §7.3, with the ack at every place
// among the session's stream, the backlog read before or after the push
// committed: after the sync that pushed them, a caseworker's laptop holds
// nothing of a case she handed over, or of a case the lead moved away
// while she wrote a note about it, and the server holds every note.
func TestRehousingOrders(t *testing.T) {
	for _, sc := range []struct {
		name string
		// offline runs on her laptop, offline, and returns the notes the
		// server must hold in Lombok afterwards.
		offline func(t *testing.T, a, lead *client.Client, c string, clock *skewedClock) []string
	}{
		{"own hand-over", func(t *testing.T, a, lead *client.Client, c string, clock *skewedClock) []string {
			n := mustAddEntry(t, a, c, "Visit: the family has moved.")
			if err := a.SetCase(context.Background(), c, map[string]any{"area": "Lombok"}); err != nil {
				t.Fatal(err)
			}
			return []string{n}
		}},
		{"note about a case moved away", func(t *testing.T, a, lead *client.Client, c string, clock *skewedClock) []string {
			n := mustAddEntry(t, a, c, "Call: the tenant asks about the move.")
			clock.set(30 * time.Second) // the lead moves it later
			if err := lead.SetCase(context.Background(), c, map[string]any{"area": "Lombok"}); err != nil {
				t.Fatal(err)
			}
			mustSync(t, lead)
			return []string{n}
		}},
	} {
		for _, pushAfterBacklog := range []bool{false, true} {
			for _, o := range orders(pushAfterBacklog) {
				if pushAfterBacklog && len(o.sessions) == 0 {
					continue
				}
				name := sc.name + "/" + o.name
				if pushAfterBacklog {
					name += ", backlog read first"
				}
				t.Run(name, func(t *testing.T) {
					s := servertest.NewServer(t, nil)
					s.AddUser("anouk", "caseworker", "Zuilen")
					s.AddUser("lotte", "lead")
					clock := &skewedClock{}
					lead := openDevice(t, s, "lotte", s.URL, clock.tweak).Client
					relay := o.relay(t, s.URL)
					a := openDevice(t, s, "anouk", relay.URL(), nil).Client
					c := mustCreateCase(t, a, map[string]any{"area": "Zuilen", "title": "Rehousing request"})
					first := mustAddEntry(t, a, c, "Intake: the flat is too small.")
					mustSync(t, a)
					mustSync(t, lead)

					notes := append(sc.offline(t, a, lead, c, clock), first)

					o.sync(t, a, relay, false, func(after string) {
						if rec, ok := serverRecord(t, s, caseKey(c)); !ok || rec.Area != "Lombok" {
							t.Fatalf("%s: server: case %v (ok %v); want it in Lombok", after, rec, ok)
						}
						for _, n := range notes {
							if rec, ok := serverRecord(t, s, entryKey(n)); !ok || rec.Area != "Lombok" {
								t.Errorf("%s: server: note %s %v (ok %v); want it in Lombok", after, n, rec, ok)
							}
						}
						mustNotFind(t, a, c, after+": the case")
						for _, n := range notes {
							mustNotFind(t, a, n, after+": a note")
						}
						if st := status(t, a); st.Pending != 0 || st.Rejected != 0 {
							t.Errorf("%s: status: %d pending, %d rejected; want none", after, st.Pending, st.Rejected)
						}
					})
				})
			}
		}
	}
}
