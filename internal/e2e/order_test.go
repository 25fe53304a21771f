package e2e

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/casesync/casesync/client"
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

// A caseworker's laptop, offline, holds a case in Zuilen and writes about
// it: a summary and a note. Meanwhile the lead moves the case to Ondiep and
// the office gives her Ondiep instead of Zuilen. When she syncs, the
// server's ack of her push may come before the scope update and backlog
// that bring the case back in Ondiep. The ack then finds the case, by the
// laptop's last knowledge, outside her new scope; that is not a hand-over
// of hers, and must not make the laptop discard the case's new state and
// her note when they arrive (simulation seed 1463, internal/simtest).
func TestAckBeforeScopeUpdate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scripts []func() Script // sessions from the second on; nil passes all
		ackAt   int             // where the last scripted session must have put the ack
	}{
		{"as it comes", nil, 0},
		{"ack first", []func() Script{scriptAckAt(0)}, 0},
		{"ack after the scope update", []func() Script{scriptAckAt(1)}, 1},
		{"ack after the backlog", []func() Script{scriptAckAt(2)}, 2},
		{"ack after caught_up", []func() Script{scriptAckAt(9)}, -1},
		{"ack lost, then ack first", []func() Script{scriptLoseAck, scriptAckAt(0)}, 0},
		{"ack lost, then after the scope update", []func() Script{scriptLoseAck, scriptAckAt(1)}, 1},
		{"ack lost, then after the backlog", []func() Script{scriptLoseAck, scriptAckAt(2)}, 2},
		{"ack lost, then after caught_up", []func() Script{scriptLoseAck, scriptAckAt(9)}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newScopeFixture(t)
			f.s.SetAreas("anouk", "Zuilen")
			relay, err := NewRelay(f.s.URL, func(n int) Script {
				if i := n - 2; i >= 0 && i < len(tc.scripts) {
					return tc.scripts[i]()
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(relay.Close)
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

			for i := range tc.scripts {
				_, err := a.Sync(ctx, nil)
				if i < len(tc.scripts)-1 && !errors.Is(err, client.ErrUnreachable) {
					t.Fatalf("sync %d through a cut session: %v; want ErrUnreachable", i+2, err)
				}
				if i == len(tc.scripts)-1 && err != nil {
					t.Fatalf("sync %d: %v", i+2, err)
				}
			}
			mustSync(t, a) // and one more, in order, which must change nothing
			if n := relay.Sessions(); n != 2+len(tc.scripts) {
				t.Fatalf("relayed %d sessions, want %d", n, 2+len(tc.scripts))
			}
			if len(tc.scripts) > 0 {
				// The order asked for is the order delivered: the scope
				// update first in the stream, the ack where the script put
				// it (-1: after caught_up).
				got := relay.Delivered(1 + len(tc.scripts))
				stream := slices.DeleteFunc(slices.Clone(got), func(s string) bool { return s == "ack" })
				ack := slices.Index(got, "ack") - 1
				want := tc.ackAt
				if want < 0 {
					want = len(stream) - 1
				}
				if len(stream) < 3 || stream[0] != "welcome" || stream[1] != "scope" || ack != want {
					t.Fatalf("session %d delivered %v; want welcome, then scope, and the ack after %d stream messages", 1+len(tc.scripts), got, want)
				}
			}

			// The server has her writes, in Ondiep.
			srvNote, ok := serverRecord(t, f.s, entryKey(note))
			if !ok || srvNote.Area != "Ondiep" {
				t.Fatalf("server: note %v (ok %v); want it in Ondiep", srvNote, ok)
			}
			// Her laptop holds the case in Ondiep, her summary, her note and
			// the case's other notes, and nothing is pending.
			v := mustGet(t, a, caseKey(f.zCase))
			if v.Area != "Ondiep" || v.String(syncproto.FieldSummary) != "Neighbours report noise at night." {
				t.Errorf("case on the device: area %q, summary %q; want Ondiep and her summary", v.Area, v.String(syncproto.FieldSummary))
			}
			if ok, err := holdsAll(a, append([]string{note}, f.zIDs...)); !ok {
				t.Errorf("device lacks the case's journal: %v", err)
			}
			if ok, err := holdsAll(a, f.oIDs); !ok {
				t.Errorf("device lacks Ondiep's other case: %v", err)
			}
			if st := status(t, a); st.Pending != 0 || st.Rejected != 0 {
				t.Errorf("status: %d pending, %d rejected; want none", st.Pending, st.Rejected)
			}
		})
	}
}
