//go:build unix

package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// The invariants, as internal/simtest/oracle.go states them, checked once
// every process has stopped:
//
//  1. Every replica holds exactly the records of its user's scope, each
//     identical to the server's: the same winning values, conflicts and
//     tombstone.
//  2. Every write a command reported done is on the server, as the winner
//     or inside a conflict, or was superseded by a later write whose writer
//     had seen it, or is in that device's rejected list with a reason.
//  3. No device holds a record outside its scope, in its replica or in
//     what 'casesync cases' lists.
//  4. Every outbox is empty once the devices are quiescent, or each change
//     left has a visible reason ('casesync rejected').

// serverState is the truth, read from casesyncd's store.
type serverState struct {
	*servertest.Snapshot
	accepted map[dot]bool // dots of the model's writes the server acknowledged
}

// readStore opens the stopped server's bbolt store in-process and reads
// every record (all areas from the start of the log), the users, the
// conflict index and which of the model's writes it accepted. It only
// reads, through View.
func (h *harness) readStore() (*serverState, error) {
	st := &serverState{accepted: map[dot]bool{}}
	s, err := boltstore.Open(filepath.Join(h.srv.data, "casesync.db"), &boltstore.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open the server's store: %w", err)
	}
	defer s.Close()
	err = s.View(context.Background(), func(tx server.Tx) error {
		var err error
		if st.Snapshot, err = servertest.ReadSnapshot(tx); err != nil {
			return err
		}
		for _, w := range h.m.writes {
			_, ok, err := tx.Accepted(w.dev.id, w.seq)
			if err != nil {
				return err
			}
			st.accepted[dot{w.dev.id, w.seq}] = ok
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the server's store: %w", err)
	}
	return st, nil
}

// cliView is what a device's CLI showed after the final sync.
type cliView struct {
	status   client.Status
	rejected []client.Rejected
	cases    []*client.View
}

// shown is what a person sees of a record; replicas must agree on it.
type shown struct {
	Area      string
	Fields    map[string]json.RawMessage
	Conflicts []syncproto.Conflict
	Deleted   bool
}

func (x shown) String() string {
	b, _ := json.Marshal(x)
	return string(b)
}

func shownRecord(r *syncproto.Record) shown {
	x := shown{Area: r.Area, Fields: map[string]json.RawMessage{}, Conflicts: r.Conflicts(), Deleted: r.Deleted()}
	for name := range r.Fields {
		if v, ok := r.Get(name); ok {
			x.Fields[name] = v
		}
	}
	return x
}

func shownView(v *client.View) shown {
	return shown{Area: v.Area, Fields: v.Fields, Conflicts: v.Conflicts, Deleted: v.Deleted}
}

// check runs every check and returns the violations found.
func (h *harness) check(st *serverState, views map[*device]cliView) []string {
	var out []string
	violate := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	h.checkServer(st, violate)
	keys := h.m.keys()
	known := map[syncproto.Key]bool{}
	for _, k := range keys {
		known[k] = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(st.Records), func(a, b syncproto.Key) int { return strings.Compare(a.String(), b.String()) }) {
		if !known[k] {
			violate("the server has %s, which no command of the test created", k)
		}
	}
	for _, d := range h.devs {
		h.checkDevice(d, st, views[d], keys, violate)
	}
	for _, d := range h.gone {
		h.checkRevoked(d, st, violate)
	}
	h.checkWrites(st, views, violate)
	return out
}

// checkServer checks the server's own consistency: an entry lies in its
// case's area, a case in its area field's winner, and the admin's conflict
// index lists exactly the records with open conflicts.
func (h *harness) checkServer(st *serverState, violate func(string, ...any)) {
	for k, r := range st.Records {
		switch k.Collection {
		case syncproto.Cases:
			if a, _ := r.String(syncproto.FieldArea); a != r.Area {
				violate("server: case %s filed under %q, its area field says %q", k.ID, r.Area, a)
			}
		case syncproto.Entries:
			id, _ := r.String(syncproto.FieldCaseID)
			if c := st.Records[caseKey(id)]; c == nil {
				violate("server: entry %s of case %s, which the server does not have", k.ID, id)
			} else if c.Area != r.Area {
				violate("server: entry %s filed under %q, its case %s under %q", k.ID, r.Area, id, c.Area)
			}
		}
		if open := len(r.Conflicts()) > 0; open != st.Flagged[k] {
			violate("server: %s has open conflicts %v, the admin's conflict index says %v", k, open, st.Flagged[k])
		}
	}
}

// checkDevice is invariants 1, 3 and 4 for one device: its replica,
// opened in-process now that no process uses it, and what its CLI showed.
func (h *harness) checkDevice(d *device, st *serverState, cv cliView, keys []syncproto.Key, violate func(string, ...any)) {
	ctx := context.Background()
	scope := st.Scope(d.user)
	want := map[syncproto.Key]*syncproto.Record{}
	for k, r := range st.Records {
		if scope.Contains(r.Area) {
			want[k] = r
		}
	}

	// Invariant 4, from 'casesync status' and 'casesync rejected'.
	if cv.status.Pending != 0 {
		violate("%s: %d changes still pending after the final syncs (status %+v)", d.name, cv.status.Pending, cv.status)
	}
	if cv.status.Rejected != len(cv.rejected) {
		violate("%s: status counts %d rejected changes, 'casesync rejected' lists %d", d.name, cv.status.Rejected, len(cv.rejected))
	}
	for _, r := range cv.rejected {
		if r.Error.Code == "" || r.Error.Message == "" {
			violate("%s: change %d for %s rejected without a visible reason: %+v", d.name, r.Change.Seq, r.Change.Key(), r.Error)
		}
	}
	if !sameSet(cv.status.Areas, scope.Areas) {
		violate("%s: status shows areas %v, the server gives %s %v", d.name, cv.status.Areas, d.user, scope.Areas)
	}

	// Invariant 3, from 'casesync cases'.
	var listed, wantCases []string
	for _, v := range cv.cases {
		listed = append(listed, v.ID)
		if rec := st.Records[caseKey(v.ID)]; rec == nil || !scope.Contains(rec.Area) {
			violate("%s (%s, scope %v): 'casesync cases' lists %s (area %q), outside its scope or unknown to the server", d.name, d.user, scope.Areas, v.ID, v.Area)
		}
	}
	for k := range want {
		if k.Collection == syncproto.Cases {
			wantCases = append(wantCases, k.ID)
		}
	}
	if !sameSet(listed, wantCases) {
		violate("%s: 'casesync cases' lists %v, want %v", d.name, sorted(listed), sorted(wantCases))
	}

	// Invariants 1 and 3, in the replica itself.
	c, err := client.Open(d.dir, d.options())
	if err != nil {
		violate("%s: open the replica: %v", d.name, err)
		return
	}
	defer c.Close()
	all := slices.Clone(keys)
	for k := range st.Records {
		if !slices.Contains(all, k) {
			all = append(all, k)
		}
	}
	for _, k := range all {
		v, err := c.Get(ctx, k)
		rec, ok := want[k]
		switch {
		case err != nil && !errors.Is(err, client.ErrNotFound):
			violate("%s: get %s: %v", d.name, k, err)
		case err != nil && ok:
			violate("%s (%s, scope %v): lacks %s (area %q on the server)", d.name, d.user, scope.Areas, k, rec.Area)
		case err == nil && !ok:
			violate("%s (%s, scope %v): holds %s, outside its scope or unknown to the server: %s", d.name, d.user, scope.Areas, k, shownView(v))
		case err == nil:
			if got, exp := shownView(v).String(), shownRecord(rec).String(); got != exp {
				violate("%s: %s differs from the server's\n  device: %s\n  server: %s", d.name, k, got, exp)
			}
			if v.Pending {
				violate("%s: %s still marked pending", d.name, k)
			}
		}
	}
	h.checkLists(c, d, want, violate)
}

// checkLists compares the replica's list views with the records it should
// hold: each case's Entries (tombstones left out) and Conflicts.
func (h *harness) checkLists(c *client.Client, d *device, want map[syncproto.Key]*syncproto.Record, violate func(string, ...any)) {
	ctx := context.Background()
	entries := map[string][]string{}
	var cases, conflicted []string
	for k, r := range want {
		if k.Collection == syncproto.Cases {
			cases = append(cases, k.ID)
		} else if !r.Deleted() {
			id, _ := r.String(syncproto.FieldCaseID)
			entries[id] = append(entries[id], k.ID)
		}
		if len(r.Conflicts()) > 0 {
			conflicted = append(conflicted, k.String())
		}
	}
	for _, id := range cases {
		es, err := c.Entries(ctx, id)
		if err != nil {
			violate("%s: entries of %s: %v", d.name, id, err)
			continue
		}
		var ids []string
		for _, e := range es {
			ids = append(ids, e.ID)
		}
		if !sameSet(ids, entries[id]) {
			violate("%s: Entries(%s) lists %v, want %v", d.name, id, sorted(ids), sorted(entries[id]))
		}
	}
	cs, err := c.Conflicts(ctx)
	if err != nil {
		violate("%s: conflicts: %v", d.name, err)
		return
	}
	var got []string
	for _, rc := range cs {
		got = append(got, rc.Key.String())
	}
	if !sameSet(got, conflicted) {
		violate("%s: Conflicts lists %v, want %v", d.name, sorted(got), sorted(conflicted))
	}
}

// checkWrites is invariant 2, and its converse: every value the server
// holds comes from a write a command reported done (a command that failed
// must not have written, and no write is applied twice under two dots).
func (h *harness) checkWrites(st *serverState, views map[*device]cliView, violate func(string, ...any)) {
	for _, k := range slices.SortedFunc(maps.Keys(st.Records), func(a, b syncproto.Key) int { return strings.Compare(a.String(), b.String()) }) {
		for _, f := range slices.Sorted(maps.Keys(st.Records[k].Fields)) {
			for _, v := range st.Records[k].Fields[f].Values {
				if w, ok := h.m.byDot[dot{v.Device, v.Seq}]; !ok {
					violate("server: %s field %s holds a value of a write no command reported done: %s:%d=%s", k, f, v.Device, v.Seq, v.Data)
				} else if w.key != k {
					violate("server: %s field %s holds a value of write %s, which was to %s", k, f, w, w.key)
				}
			}
		}
	}
	rejected := map[dot]client.Rejected{}
	for _, d := range h.devs {
		for _, r := range views[d].rejected {
			rejected[dot{d.id, r.Change.Seq}] = r
		}
	}
	for _, w := range h.m.writes {
		dt := dot{w.dev.id, w.seq}
		rec := st.Records[w.key]
		if r, ok := rejected[dt]; ok {
			h.stats["rejected"]++
			if r.Change.Key() != w.key {
				violate("write %s: the rejected list holds change %d for %s", w, w.seq, r.Change.Key())
			}
			if st.accepted[dt] {
				violate("write %s: in the rejected list (%s: %s), yet the server accepted it", w, r.Error.Code, r.Error.Message)
			}
			continue
		}
		if !st.accepted[dt] {
			if w.dev.revoked != nil {
				continue // lost with the wipe: checkRevoked
			}
			violate("write %s: lost: the server never accepted it and the device keeps no rejection", w)
			continue
		}
		if rec == nil {
			violate("write %s: accepted, but the server has no %s", w, w.key)
			continue
		}
		for f, want := range w.vals {
			fld := rec.Fields[f]
			if v, ok := findDot(fld, dt); ok {
				if string(v.Data) != string(want) {
					violate("write %s: field %s holds %s on the server, written %s", w, f, v.Data, want)
				}
				continue
			}
			if !fld.Seen.Covers(syncproto.Dot{Device: dt.device, Seq: dt.seq}) {
				violate("write %s: field %s lost: neither on the server (%s) nor seen by its writers, nor rejected", w, f, describe(fld))
				continue
			}
			// Superseded: a value now there must come from a write
			// started after this one, since only such a writer could
			// have seen it.
			later := false
			for _, v := range fld.Values {
				if o, ok := h.m.byDot[dot{v.Device, v.Seq}]; ok {
					later = later || o.n > w.n
				}
			}
			if !later {
				violate("write %s: field %s superseded, but by no later write: %s", w, f, describe(fld))
			}
		}
	}
}

func findDot(f syncproto.Field, d dot) (syncproto.Value, bool) {
	for _, v := range f.Values {
		if v.Device == d.device && v.Seq == d.seq {
			return v, true
		}
	}
	return syncproto.Value{}, false
}

func describe(f syncproto.Field) string {
	var b strings.Builder
	for _, v := range f.Values {
		fmt.Fprintf(&b, "%s:%d=%s ", v.Device, v.Seq, v.Data)
	}
	fmt.Fprintf(&b, "seen %v", map[string]uint64(f.Seen))
	return b.String()
}

func sorted(a []string) []string { return slices.Sorted(slices.Values(a)) }

func sameSet(a, b []string) bool { return slices.Equal(sorted(a), sorted(b)) }
