package simtest

import (
	"context"
	"errors"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// Known bugs the simulation found. While one is not fixed, a run can
// recognise its exact symptom and count it instead of failing, so that
// every other invariant keeps being checked on every seed: that is what
// -simtest.strict=false does. Strict is the default, since every bug
// listed here is fixed; each has a regression test in known_test.go.
//
// Fixed: own-move, a device still holding the case it handed over, or its
// journal, after the sync that did it; orphan-entry, an accepted
// moved-away note kept under a pending area for good; stale-marker, an
// A→B→C marker evicting a record in scope (all three in commit 8cff2c9);
// gone-case, lost-hand-over and ack-first, below.
type knownBug string

// knownGoneCase (fixed in 1138a2c): during a session in which a device
// moved a case out of its scope, the client dropped every incoming state
// of that case and its entries (client staleForUs, commit 8cff2c9), even
// a current one in its scope again: the lead moved the case back, or the
// device's areas grew. The checkpoint passed the record and the device
// lacked it for good.
const knownGoneCase knownBug = "gone-case"

// knownLostHandOver: a device hands a case over to an area outside its
// scope while a later area write it has not seen brings the case back to
// its scope; the device keeps the case and loses the journal. Seed 750
// (knownSeeds): the server moved the case out and back and sent its
// entries again, but a later write had filed the case after them, so
// they came ahead of its newer state in one message, and the client,
// still remembering its hand-over, took them as stale. Fixed in the
// client (staleForUs, applyChanges: cases judged first, and everything
// after the hand-over's acknowledged head is current). When the later
// write reaches the server first, the case never moves and the entries,
// unchanged, were never sent again: fixed in the server's applyChange
// (server TestServer_LostHandOverRefilesJournal).
const knownLostHandOver knownBug = "lost-hand-over"

// knownAckFirst: offline, a caseworker writes about a case of an area she
// then loses, while the case moves to an area she gains. On her next sync
// the ack of her push came before the scope update and the backlog (the
// server's push handler and streamer send independently), and found the
// case, by her laptop's last knowledge, outside her new scope. The client
// took any accepted change to such a case for a hand-over of hers
// (client confirm), and dropped as stale the backlog's states of the
// case and her notes, now in the gained area; the checkpoint passed them.
// Seed 1463 (knownSeeds) showed it on the CI machine only; the e2e test
// TestAckBeforeScopeUpdate makes the order happen every time. Fixed in
// the client: only a change that writes the area is a hand-over.
const knownAckFirst knownBug = "ack-first"

// The same CI run showed a second seed, which truncation of the log hid:
// after a completed sync a device held a case that its own hand-over had
// moved out of its scope. A scope update had evicted the case (by the
// device's knowledge in a lost area) while the move was pending; the ack
// then skipped the evicted record without remembering the hand-over, and
// a backlog read before the move committed brought the case back where
// another device had moved it, in scope. Fixed in the client's confirm;
// internal/e2e TestOwnHandOverAfterScopeLoss makes the order happen. The
// simulation now ends a failing run of many seeds with the seeds and
// their first violations, where a truncated log still shows them.

// tolerate reports whether the discrepancy of record k on d is the
// symptom of one of the known bugs listed, and counts it. In strict mode it
// tolerates nothing, but names the bug in the violation that follows.
func (s *Sim) tolerate(d *device, st *serverState, k syncproto.Key, bugs ...knownBug) bool {
	for _, b := range bugs {
		if !s.isKnown(b, d, st, k) {
			continue
		}
		if s.cfg.Strict {
			s.hint = b
			return false
		}
		if s.stats.Known == nil {
			s.stats.Known = map[knownBug]int{}
		}
		s.stats.Known[b]++
		s.logf("%s: known bug %s: %s", d.name, b, k)
		return true
	}
	return false
}

func (s *Sim) isKnown(b knownBug, d *device, st *serverState, k syncproto.Key) bool {
	rec := st.Records[k]
	scope := st.Scope(d.user.name)
	switch b {
	case knownGoneCase:
		// d lacks a record in its scope, of a case whose area d wrote.
		if rec == nil || !scope.Contains(rec.Area) {
			return false
		}
		if _, err := d.c.Get(context.Background(), k); !errors.Is(err, client.ErrNotFound) {
			return false
		}
		c := rec
		if k.Collection == syncproto.Entries {
			id, _ := rec.String(syncproto.FieldCaseID)
			c = st.Records[caseKey(id)]
		}
		return c != nil && c.Fields[syncproto.FieldArea].Seen[d.id] > 0
	}
	return false
}
