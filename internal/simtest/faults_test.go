package simtest

import (
	"context"
	"testing"
)

// The faults must land where the simulation says they do: these scripted
// runs check the gates against the server's store.

// accepted counts d's changes the server has committed.
func (s *Sim) accepted(d *device) int {
	st, err := d.c.Status(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return int(d.seq) - st.Pending - st.Rejected + s.lostAcks(d)
}

// A gate after the device's third write (upgrade, hello, first push) lets
// the server commit that push and the two the client pipelines after it,
// and drops every ack: the changes are on the server and still pending on
// the device, and the resends are accepted once (checkWrites and the
// final comparison, after healing, would see a duplicate).
func TestGateBetweenCommitAndAck(t *testing.T) {
	scenario(t, func(t *testing.T, s *Sim) {
		u := s.newUser("anouk", "caseworker", "Zuilen")
		d := s.newDevice(u, 0, 1) // one change per push
		c := s.scriptCase(d, "Zuilen")
		s.scriptEntry(d, c)
		s.scriptEntry(d, c)
		if s.sync(d, &gate{Side: deviceSide, AfterWrites: 3}, nil) {
			t.Fatalf("the sync succeeded through its gate")
		}
		if got := s.accepted(d); got != 3 {
			t.Fatalf("server committed %d changes; want all 3 pipelined pushes", got)
		}
		if s.stats.LostAcks != 3 {
			t.Fatalf("lost acks = %d, want 3", s.stats.LostAcks)
		}
		s.scriptSync(d)
		if st, _ := d.c.Status(context.Background()); st.Pending != 0 {
			t.Errorf("%d changes pending after the resend", st.Pending)
		}
	})
}

// A gate on the server's reads from the device's first push on drops the
// push (the server has read the whole hello: it answered it with the
// welcome the client waits for): the server commits nothing, and the next
// sync delivers it.
func TestGateDropsPush(t *testing.T) {
	scenario(t, func(t *testing.T, s *Sim) {
		u := s.newUser("anouk", "caseworker", "Zuilen")
		d := s.newDevice(u, 0, 500)
		s.scriptCase(d, "Zuilen")
		if s.sync(d, &gate{Side: serverSide, AfterWrites: 3}, nil) {
			t.Fatalf("the sync succeeded through its gate")
		}
		if got := s.accepted(d); got != 0 {
			t.Fatalf("server committed %d changes behind a held read", got)
		}
		s.scriptSync(d)
		if got := s.accepted(d); got != 1 {
			t.Errorf("server committed %d changes after the retry, want 1", got)
		}
	})
}

// A server crash while the ack is held loses the ack, not the change.
func TestServerCrashAfterCommit(t *testing.T) {
	scenario(t, func(t *testing.T, s *Sim) {
		u := s.newUser("anouk", "caseworker", "Zuilen")
		d := s.newDevice(u, 0, 500)
		s.scriptCase(d, "Zuilen")
		crashed := false
		ok := s.sync(d, &gate{Side: deviceSide, AfterWrites: 3}, func() string {
			s.crashServer()
			crashed = true
			return "server crashed"
		})
		if ok || !crashed {
			t.Fatalf("sync ok=%v, crashed=%v: the gate did not hold", ok, crashed)
		}
		s.startServer()
		if got := s.accepted(d); got != 1 {
			t.Fatalf("after the restart the server has %d changes, want 1", got)
		}
		s.scriptSync(d)
	})
}
