package simtest

import (
	"context"
	"errors"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// Known bugs the simulation found and that are not fixed yet. Until they
// are, a run recognises their exact symptom and counts it instead of
// failing, so that every other invariant keeps being checked on every
// seed; Config.Strict (-simtest.strict) turns the tolerance off and names
// the bug in the violation instead. Each has a regression test in
// known_test.go, skipped until the fix lands (-simtest.known runs them).
//
// Fixed so far (their regression tests run unconditionally): own-move, a
// device still holding the case it handed over, or its journal, after the
// sync that did it; orphan-entry, an accepted moved-away note kept under a
// pending area for good; stale-marker, an A→B→C marker evicting a record
// in scope. All three were fixed in commit 8cff2c9.
type knownBug string

// knownGoneCase: during a session in which a device moved a case out of
// its scope, the client drops every incoming state of that case and its
// entries (client/sync.go staleForUs, commit 8cff2c9), even a current one
// that is in its scope again: the lead moved the case back, or the
// device's areas grew. The checkpoint passes the record and the device
// lacks it for good.
const knownGoneCase knownBug = "gone-case"

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
	rec := st.records[k]
	scope := st.scope(d.user.name)
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
			c = st.records[caseKey(id)]
		}
		return c != nil && c.Fields[syncproto.FieldArea].Seen[d.id] > 0
	}
	return false
}
