package simtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// The oracle: what the simulation knows independently of the code under
// test, and the invariants checked against it.
//
//  1. Every replica holds exactly the records of its user's scope, each
//     identical to the server's: the same winning values, conflicts and
//     tombstone (checkFinal, after healing).
//  2. Every write a device accepted locally is on the server, as the
//     winner or inside a conflict, or was superseded by a later write whose
//     writer had seen it, or is in that device's Rejected list with a
//     reason (checkWrites).
//  3. After every successful sync, the device holds no record outside its
//     user's scope and none the server does not have (checkHeld).
//  4. Every outbox is empty once the devices are quiescent: a change the
//     server refused is in Rejected, never silently pending (checkFinal).

// write is one local write the client accepted: its dot and the values it
// wrote, canonical.
type write struct {
	n    int // issue order across all devices
	step int
	dev  *device
	seq  uint64
	key  syncproto.Key
	vals map[string]json.RawMessage
	what string
}

type dot struct {
	device string
	seq    uint64
}

// entryRef is an entry as the simulation created it.
type entryRef struct {
	id, caseID string
	author     string // user name
}

// model is the simulation's own record of what was written.
type model struct {
	writes  []*write
	byDot   map[dot]*write
	cases   []string   // case IDs in creation order
	entries []entryRef // in creation order
}

func newModel() *model { return &model{byDot: map[dot]*write{}} }

// keys returns every record key ever created, in creation order.
func (m *model) keys() []syncproto.Key {
	out := make([]syncproto.Key, 0, len(m.cases)+len(m.entries))
	for _, id := range m.cases {
		out = append(out, caseKey(id))
	}
	for _, e := range m.entries {
		out = append(out, entryKey(e.id))
	}
	return out
}

func caseKey(id string) syncproto.Key  { return syncproto.Key{Collection: syncproto.Cases, ID: id} }
func entryKey(id string) syncproto.Key { return syncproto.Key{Collection: syncproto.Entries, ID: id} }

// canonical encodes v as the replicas compare it.
func canonical(v any) json.RawMessage {
	b, err := syncproto.Marshal(v)
	if err != nil {
		panic(err)
	}
	c, err := syncproto.Canonical(bytesTrim(b))
	if err != nil {
		panic(err)
	}
	return c
}

func bytesTrim(b []byte) []byte { return []byte(strings.TrimSpace(string(b))) }

// track records the outcome of a local write of vals to key by d: an
// accepted write took the device's next change seq.
func (s *Sim) track(d *device, key syncproto.Key, vals map[string]any, what string, err error) bool {
	if err != nil {
		var pe *syncproto.Error
		if !errors.As(err, &pe) && !errors.Is(err, client.ErrNotFound) && !errors.Is(err, client.ErrNoConflict) {
			s.violate("%s: %s: unexpected local error %v", d.name, what, err)
		}
		s.stats.Refused++
		s.logf("%s: %s refused locally: %v", d.name, what, err)
		return false
	}
	d.seq++
	w := &write{n: len(s.m.writes), step: s.step, dev: d, seq: d.seq, key: key, vals: map[string]json.RawMessage{}, what: what}
	for f, v := range vals {
		if raw, ok := v.(json.RawMessage); ok {
			w.vals[f] = raw
		} else {
			w.vals[f] = canonical(v)
		}
	}
	s.m.writes = append(s.m.writes, w)
	s.m.byDot[dot{d.id, d.seq}] = w
	s.stats.Writes++
	s.logf("%s: %s (change %d)", d.name, what, d.seq)
	return true
}

// serverState is what the checks read from the server's store.
type serverState = servertest.Snapshot

// readServer reads every record (View + Scan over every area from the
// start of the log), the users and the conflict index.
func (s *Sim) readServer() *serverState {
	var st *serverState
	err := s.store.View(context.Background(), func(tx server.Tx) error {
		var err error
		st, err = servertest.ReadSnapshot(tx)
		return err
	})
	if err != nil {
		s.violate("read the server's store: %v", err)
		st = &serverState{Records: map[syncproto.Key]*syncproto.Record{}, Users: map[string]server.User{}, Flagged: map[syncproto.Key]bool{}}
	}
	return st
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

// checkHeld is invariant 3: after a sync completed, d holds only records
// the server has, in its user's current scope.
func (s *Sim) checkHeld(d *device) {
	st := s.readServer()
	scope := st.Scope(d.user.name)
	for _, k := range s.m.keys() {
		v, err := d.c.Get(context.Background(), k)
		if errors.Is(err, client.ErrNotFound) {
			continue
		}
		if err != nil {
			s.violate("%s: get %s: %v", d.name, k, err)
			continue
		}
		if v.Pending {
			continue // a write made since: the next sync decides
		}
		rec := st.Records[k]
		switch {
		case rec == nil:
			s.violate("%s: holds %s after a sync, which the server does not have: %s", d.name, k, shownView(v))
		case !scope.Contains(rec.Area):
			s.violate("%s (%s, scope %v): holds %s after a sync; it is in %q on the server (%q on the device)", d.name, d.user.name, scope.Areas, k, rec.Area, v.Area)
		}
	}
}

// checkFinal checks invariants 1, 2 and 4 once every device is quiescent.
func (s *Sim) checkFinal() {
	ctx := context.Background()
	st := s.readServer()
	s.checkServer(st)
	keys := s.m.keys()
	known := map[syncproto.Key]bool{}
	for _, k := range keys {
		known[k] = true
	}
	for _, k := range slices.SortedFunc(maps.Keys(st.Records), func(a, b syncproto.Key) int { return strings.Compare(a.String(), b.String()) }) {
		if !known[k] {
			s.violate("the server has %s, which no device wrote", k)
		}
	}
	for _, d := range s.devs {
		status, err := d.c.Status(ctx)
		if err != nil {
			s.violate("%s: status: %v", d.name, err)
			continue
		}
		if status.Pending != 0 {
			s.violate("%s: %d changes still pending after healing (status %+v)", d.name, status.Pending, status)
		}
		scope := st.Scope(d.user.name)
		if !sameSet(status.Areas, scope.Areas) {
			s.violate("%s: shows areas %v, the server gives %s %v", d.name, status.Areas, d.user.name, scope.Areas)
		}
		want := map[syncproto.Key]*syncproto.Record{}
		for k, r := range st.Records {
			if scope.Contains(r.Area) {
				want[k] = r
			}
		}
		// Every record ever written: held exactly when in scope, and then
		// shown as the server has it.
		skip := map[syncproto.Key]bool{} // a tolerated known bug
		for _, k := range keys {
			v, err := d.c.Get(ctx, k)
			rec, ok := want[k]
			if (err != nil) == ok && s.tolerate(d, st, k, knownGoneCase) {
				skip[k] = true
				continue
			}
			switch {
			case err != nil && !errors.Is(err, client.ErrNotFound):
				s.violate("%s: get %s: %v", d.name, k, err)
			case err != nil && ok:
				s.violate("%s (%s, scope %v): lacks %s (area %q on the server)", d.name, d.user.name, scope.Areas, k, rec.Area)
			case err == nil && !ok:
				s.violate("%s (%s, scope %v): holds %s, outside its scope or unknown to the server: %s", d.name, d.user.name, scope.Areas, k, shownView(v))
			case err == nil:
				if got, exp := shownView(v).String(), shownRecord(rec).String(); got != exp {
					s.violate("%s: %s differs from the server's\n  device: %s\n  server: %s", d.name, k, got, exp)
				}
			}
		}
		s.checkLists(d, want, skip)
	}
	s.checkWrites(st)
}

// checkLists compares the device's list views with the records it should
// hold: Cases, each case's Entries (tombstones left out) and Conflicts.
func (s *Sim) checkLists(d *device, want map[syncproto.Key]*syncproto.Record, skip map[syncproto.Key]bool) {
	ctx := context.Background()
	cases, err := d.c.Cases(ctx, client.Filter{})
	if err != nil {
		s.violate("%s: cases: %v", d.name, err)
		return
	}
	var got, exp []string
	for _, v := range cases {
		if !skip[caseKey(v.ID)] {
			got = append(got, v.ID)
		}
	}
	entries := map[string][]string{}
	var conflicted []string
	for k, r := range want {
		if skip[k] {
			continue
		}
		if k.Collection == syncproto.Cases {
			exp = append(exp, k.ID)
		} else if !r.Deleted() {
			id, _ := r.String(syncproto.FieldCaseID)
			entries[id] = append(entries[id], k.ID)
		}
		if len(r.Conflicts()) > 0 {
			conflicted = append(conflicted, k.String())
		}
	}
	if !sameSet(got, exp) {
		s.violate("%s: Cases lists %v, want %v", d.name, sorted(got), sorted(exp))
	}
	for _, id := range exp {
		es, err := d.c.Entries(ctx, id)
		if err != nil {
			s.violate("%s: entries of %s: %v", d.name, id, err)
			continue
		}
		var ids []string
		for _, e := range es {
			if !skip[entryKey(e.ID)] {
				ids = append(ids, e.ID)
			}
		}
		if !sameSet(ids, entries[id]) {
			s.violate("%s: Entries(%s) lists %v, want %v", d.name, id, sorted(ids), sorted(entries[id]))
		}
	}
	cs, err := d.c.Conflicts(ctx)
	if err != nil {
		s.violate("%s: conflicts: %v", d.name, err)
		return
	}
	var gotC []string
	for _, c := range cs {
		if !skip[c.Key] {
			gotC = append(gotC, c.Key.String())
		}
	}
	if !sameSet(gotC, conflicted) {
		s.violate("%s: Conflicts lists %v, want %v", d.name, sorted(gotC), sorted(conflicted))
	}
}

// checkServer checks the server's own consistency: an entry lies in its
// case's area, a case in its area field's winner, and the admin's conflict
// index lists exactly the records with open conflicts.
func (s *Sim) checkServer(st *serverState) {
	for k, r := range st.Records {
		switch k.Collection {
		case syncproto.Cases:
			if a, _ := r.String(syncproto.FieldArea); a != r.Area {
				s.violate("server: case %s filed under %q, its area field says %q", k.ID, r.Area, a)
			}
		case syncproto.Entries:
			id, _ := r.String(syncproto.FieldCaseID)
			c := st.Records[caseKey(id)]
			if c == nil {
				s.violate("server: entry %s of case %s, which the server does not have", k.ID, id)
			} else if c.Area != r.Area {
				s.violate("server: entry %s filed under %q, its case %s under %q", k.ID, r.Area, id, c.Area)
			}
		}
		if open := len(r.Conflicts()) > 0; open != st.Flagged[k] {
			s.violate("server: %s has open conflicts %v, the admin's conflict index says %v", k, open, st.Flagged[k])
		}
	}
}

// checkWrites is invariant 2.
func (s *Sim) checkWrites(st *serverState) {
	rejected := map[dot]client.Rejected{}
	for _, d := range s.devs {
		rs, err := d.c.Rejected(context.Background())
		if err != nil {
			s.violate("%s: rejected: %v", d.name, err)
			continue
		}
		for _, r := range rs {
			rejected[dot{d.id, r.Change.Seq}] = r
		}
		s.stats.Rejected += len(rs)
	}
	for _, w := range s.m.writes {
		dt := dot{w.dev.id, w.seq}
		rec := st.Records[w.key]
		if r, ok := rejected[dt]; ok {
			if r.Error.Code == "" {
				s.violate("write %s: rejected without a reason", w)
			}
			if r.Change.Key() != w.key {
				s.violate("write %s: Rejected holds change %d for %s", w, w.seq, r.Change.Key())
			}
			if rec != nil && holds(rec, dt) {
				s.violate("write %s: in Rejected (%s), yet on the server", w, r.Error.Code)
			}
			continue
		}
		if rec == nil {
			s.violate("write %s: lost: the server has no %s and the device did not keep a rejection", w, w.key)
			continue
		}
		for f, want := range w.vals {
			fld := rec.Fields[f]
			if v, ok := findDot(fld, dt); ok {
				if string(v.Data) != string(want) {
					s.violate("write %s: field %s holds %s on the server, written %s", w, f, v.Data, want)
				}
				continue
			}
			if !fld.Seen.Covers(syncproto.Dot{Device: dt.device, Seq: dt.seq}) {
				s.violate("write %s: field %s lost: neither on the server (%s) nor seen by its writers, nor rejected", w, f, describe(fld))
				continue
			}
			// Superseded: some value now there must come from a write
			// issued after this one, since only such a writer could have
			// seen it.
			later := false
			for _, v := range fld.Values {
				o, ok := s.m.byDot[dot{v.Device, v.Seq}]
				if !ok {
					s.violate("write %s: field %s holds a value of unknown write %s:%d", w, f, v.Device, v.Seq)
					continue
				}
				later = later || o.n > w.n
			}
			if !later {
				s.violate("write %s: field %s superseded, but by no later write: %s", w, f, describe(fld))
			}
		}
	}
}

func (w *write) String() string {
	return fmt.Sprintf("#%d (step %d, %s change %d, %s %s)", w.n, w.step, w.dev.name, w.seq, w.what, w.key)
}

func holds(r *syncproto.Record, d dot) bool {
	for _, f := range r.Fields {
		if _, ok := findDot(f, d); ok {
			return true
		}
	}
	return false
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
