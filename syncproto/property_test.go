package syncproto_test

// Property tests of the merge rules (record.go). A simulation runs up to
// five devices, each with a local replica of one case and one entry and its
// own hybrid logical clock (skewed up to ±3 h, reading a wall clock that the
// test advances). Devices make Edits and Deletes on their replica, resolve
// the conflicts they see, and exchange change states (Change.State) and
// whole replica states in any order, with duplicates and drops; a server
// clock may re-stamp changes (Clock.Bound). Alongside, the test keeps the
// true causal history: for every replica, the exact set of writes it has
// received (directly, or through a state that had received them), and for
// every write, that set on its writer at the moment of writing.
//
// Two delivery modes are drawn:
//   - arbitrary: any change state to any replica at any time;
//   - causal: a change state reaches a replica only after everything its
//     writer had seen of the record (whole states are always causal). This
//     is what the server provides: it serves whole record states joined
//     from the changes it accepted, and a device can only have seen what
//     the server had.
//
// The per-field rules hold in both modes. Whether an entry is deleted
// depends on a deletion's covers, one version vector for the whole record;
// it is exact only in causal mode (see checkDeleted).
//
// On failure the message lists the schedule; rapid prints the seed and a
// fail file to replay it (-rapid.seed / -rapid.failfile).

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/casesync/casesync/syncproto"
)

var (
	propCase  = syncproto.Key{Collection: syncproto.Cases, ID: "case-1"}
	propEntry = syncproto.Key{Collection: syncproto.Entries, ID: "entry-1"}
	propBase  = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)
)

// Value domains are small so that concurrent writes often agree.
var propValues = map[string][]string{
	syncproto.FieldTitle:  {`"a"`, `"b"`, `"c"`},
	syncproto.FieldStatus: {`"open"`, `"waiting"`, `"closed"`},
	syncproto.FieldTags:   {`[]`, `["rent"]`, `["rent","repair"]`},
	"priority":            {`1`, `2`, `3`},
	syncproto.FieldText:   {`"x"`, `"y"`, `"z"`},
}

// propConfig shapes a simulation.
type propConfig struct {
	maxDevs   int
	maxSteps  int
	titleOnly bool          // write only the case's title (no entry)
	maxSkew   time.Duration // each device's clock is off by up to ± this
	mode      string        // "causal", "arbitrary" or "" to draw one
	exact     bool          // check the touched replica against the history after every step
}

// propWrite is one field of one change, and what its writer had seen.
type propWrite struct {
	key   syncproto.Key
	field string
	dot   syncproto.Dot
	data  string
	seen  map[syncproto.Dot]bool // writer's received writes of key, before this one
}

// propChange is a change as made, and as the server stored it if pushed.
type propChange struct {
	dev    string
	ch     syncproto.Change
	seen   map[syncproto.Dot]bool
	server syncproto.Stamp // 0 until pushed
}

func (c *propChange) dot() syncproto.Dot { return syncproto.Dot{Device: c.dev, Seq: c.ch.Seq} }

// state returns the change's state: as made, or with the server's stamp.
func (c *propChange) state(server bool) *syncproto.Record {
	ch := c.ch
	if server {
		ch.Stamp = c.server
	}
	return ch.State(c.dev).Clone()
}

type propDev struct {
	id    string
	skew  time.Duration
	clock *syncproto.Clock // nil for an observer, which never writes
	seq   uint64
	recs  map[syncproto.Key]*syncproto.Record
	known map[syncproto.Key]map[syncproto.Dot]bool
}

type propSim struct {
	t       *rapid.T
	cfg     propConfig
	causal  bool
	now     time.Time
	server  *syncproto.Clock
	devs    []*propDev
	keys    []syncproto.Key
	changes []*propChange
	writes  []*propWrite
	stamps  map[syncproto.Dot]syncproto.Stamp // lowest stamp of each dot
	log     []string
	snaps   map[syncproto.Key][]*syncproto.Record

	inversions int // writes that replaced a write with a higher stamp
	restamps   int // changes the server re-stamped
}

func newPropDev(id string, keys []syncproto.Key) *propDev {
	d := &propDev{id: id, recs: map[syncproto.Key]*syncproto.Record{}, known: map[syncproto.Key]map[syncproto.Dot]bool{}}
	for _, k := range keys {
		d.recs[k] = &syncproto.Record{Collection: k.Collection, ID: k.ID}
		d.known[k] = map[syncproto.Dot]bool{}
	}
	return d
}

func newPropSim(t *rapid.T, cfg propConfig) *propSim {
	s := &propSim{t: t, cfg: cfg, now: propBase, stamps: map[syncproto.Dot]syncproto.Stamp{}, snaps: map[syncproto.Key][]*syncproto.Record{}}
	switch cfg.mode {
	case "causal":
		s.causal = true
	case "":
		s.causal = rapid.Bool().Draw(t, "causal delivery")
	}
	s.server = syncproto.NewClock(func() time.Time { return s.now }, 0)
	s.keys = []syncproto.Key{propCase}
	if !cfg.titleOnly {
		s.keys = append(s.keys, propEntry)
	}
	n := rapid.IntRange(2, cfg.maxDevs).Draw(t, "devices")
	for i := range n {
		d := newPropDev(fmt.Sprintf("dev%d", i), s.keys)
		skew := time.Duration(rapid.Int64Range(0, int64(cfg.maxSkew/time.Second)).Draw(t, fmt.Sprintf("dev%d skew (s)", i))) * time.Second
		if rapid.Bool().Draw(t, fmt.Sprintf("dev%d clock slow", i)) {
			skew = -skew
		}
		d.skew = skew
		d.clock = syncproto.NewClock(func() time.Time { return s.now.Add(d.skew) }, 0)
		s.devs = append(s.devs, d)
	}
	s.logf("mode causal=%v; devices:%s", s.causal, strings.Join(s.devNames(), ""))
	// dev0 creates the records; others edit one once they have received it.
	s.write(s.devs[0], propCase, map[string]json.RawMessage{
		syncproto.FieldTitle:  json.RawMessage(`"t0"`),
		syncproto.FieldStatus: json.RawMessage(`"open"`),
		syncproto.FieldArea:   json.RawMessage(`"Zuilen"`),
	}, false)
	if !cfg.titleOnly {
		s.write(s.devs[0], propEntry, map[string]json.RawMessage{
			syncproto.FieldCaseID:     json.RawMessage(`"case-1"`),
			syncproto.FieldKind:       json.RawMessage(`"visit"`),
			syncproto.FieldAuthor:     json.RawMessage(`"ana"`),
			syncproto.FieldOccurredAt: json.RawMessage(`"2025-03-04"`),
			syncproto.FieldText:       json.RawMessage(`"t0"`),
		}, false)
	}
	return s
}

func (s *propSim) devNames() []string {
	var out []string
	for _, d := range s.devs {
		out = append(out, fmt.Sprintf(" %s(skew %v)", d.id, d.skew))
	}
	return out
}

func (s *propSim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%3d  ", len(s.log))+fmt.Sprintf(format, args...))
}

func (s *propSim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf(format+"\nschedule:\n%s", append(args, strings.Join(s.log, "\n"))...)
}

func (s *propSim) json(v any) string {
	b, err := syncproto.Marshal(v)
	if err != nil {
		s.t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

// created reports whether d has received the record's creation.
func (s *propSim) created(d *propDev, k syncproto.Key) bool {
	create := syncproto.Dot{Device: "dev0", Seq: 1}
	if k == propEntry {
		create.Seq = 2
	}
	return d.known[k][create]
}

// ensureCreated gives d the record's creation if it has not received it: a
// device edits, or shows conflicts of, only records it has.
func (s *propSim) ensureCreated(d *propDev, k syncproto.Key) {
	if s.created(d, k) {
		return
	}
	c := s.changes[0]
	if k == propEntry {
		c = s.changes[1]
	}
	s.logf("change %s:%d (creation) to %s", c.dev, c.ch.Seq, d.id)
	s.receiveChange(d, c, c.server != 0)
}

// write makes a change on d's replica, as a client would, and records it.
func (s *propSim) write(d *propDev, k syncproto.Key, vals map[string]json.RawMessage, del bool) {
	var cur *syncproto.Record
	if len(d.recs[k].Fields) > 0 {
		cur = d.recs[k]
	}
	d.seq++
	at := d.clock.Now()
	var ch syncproto.Change
	if del {
		ch = syncproto.Delete(cur, d.seq, at)
	} else {
		ch = syncproto.Edit(cur, k.Collection, k.ID, d.seq, at, vals)
	}
	// Generated changes are ones the server accepts.
	if err := syncproto.ValidateChange(&ch, cur, syncproto.Actor{User: "ana", Device: d.id}, nil); err != nil {
		s.fatalf("generated change is invalid: %v: %s", err, s.json(ch))
	}
	pc := &propChange{dev: d.id, ch: ch, seen: maps.Clone(d.known[k])}
	s.changes = append(s.changes, pc)
	dot := pc.dot()
	var desc []string
	for _, name := range slices.Sorted(maps.Keys(ch.Fields)) {
		w := ch.Fields[name]
		s.writes = append(s.writes, &propWrite{key: k, field: name, dot: dot, data: string(w.Data), seen: pc.seen})
		desc = append(desc, name+"="+string(w.Data))
		for _, x := range s.writes {
			if x.key == k && x.field == name && pc.seen[x.dot] && s.stamps[x.dot] > at {
				s.inversions++
			}
		}
	}
	s.stamps[dot] = at
	s.logf("%s writes %s %s as change #%d dot %s:%d at %v (seen %s)", d.id, k, strings.Join(desc, " "), len(s.changes)-1, d.id, d.seq, at, propDots(pc.seen))
	s.apply(d, k, ch.State(d.id))
	d.known[k][dot] = true
}

func propDots(m map[syncproto.Dot]bool) string {
	var out []string
	for d := range m {
		out = append(out, fmt.Sprintf("%s:%d", d.Device, d.Seq))
	}
	slices.Sort(out)
	return "{" + strings.Join(out, ",") + "}"
}

// apply joins st into d's replica of k, as a client does with a received
// state: the clock observes its stamps.
func (s *propSim) apply(d *propDev, k syncproto.Key, st *syncproto.Record) {
	if d.clock != nil {
		for _, f := range st.Fields {
			for _, v := range f.Values {
				d.clock.Observe(v.Stamp)
			}
		}
	}
	d.recs[k].Join(st.Clone())
	if len(s.snaps[k]) < 300 {
		// A change state's Area is set only once joined into a record (a
		// case's Area follows its area field), so keep it joined into an
		// empty one.
		s.snaps[k] = append(s.snaps[k], d.recs[k].Clone(), propJoin(&syncproto.Record{Collection: k.Collection, ID: k.ID}, st))
	}
}

func (s *propSim) pickDev(label string) *propDev {
	return s.devs[rapid.IntRange(0, len(s.devs)-1).Draw(s.t, label)]
}

func (s *propSim) pickKey() syncproto.Key {
	return rapid.SampledFrom(s.keys).Draw(s.t, "record")
}

func (s *propSim) pickValue(field string) json.RawMessage {
	return json.RawMessage(rapid.SampledFrom(propValues[field]).Draw(s.t, field))
}

// run performs a random schedule of steps.
func (s *propSim) run() {
	// At least a third of the maximum: rapid favours small numbers. Steps
	// that shrinking finds unnecessary become "idle".
	steps := rapid.IntRange(s.cfg.maxSteps/3, s.cfg.maxSteps).Draw(s.t, "steps")
	for range steps {
		s.now = s.now.Add(time.Duration(rapid.IntRange(0, 300).Draw(s.t, "wall clock advance (s)")) * time.Second)
		action := rapid.SampledFrom([]string{
			"idle",
			"edit", "edit", "edit",
			"deliver change", "deliver change", "deliver change",
			"deliver state",
			"resolve", "resolve",
			"push", "push",
			"correct clock",
		}).Draw(s.t, "action")
		var touched *propDev
		switch action {
		case "edit":
			touched = s.edit()
		case "resolve":
			touched = s.resolve()
		case "deliver change":
			touched = s.deliverChange()
		case "deliver state":
			touched = s.deliverState()
		case "push":
			s.push()
		case "correct clock":
			d := s.pickDev("device")
			d.clock.SetOffset(-d.skew)
			s.logf("%s corrects its clock by %v", d.id, -d.skew)
		}
		if touched != nil && s.cfg.exact {
			s.checkReplica(touched, false)
		}
	}
}

func (s *propSim) edit() *propDev {
	d := s.pickDev("writer")
	k := s.pickKey()
	s.ensureCreated(d, k)
	if k == propCase {
		fields := []string{syncproto.FieldTitle, syncproto.FieldStatus, syncproto.FieldTags, "priority"}
		if s.cfg.titleOnly {
			fields = fields[:1]
		}
		names := rapid.SliceOfNDistinct(rapid.SampledFrom(fields), 1, 2, rapid.ID[string]).Draw(s.t, "fields")
		vals := map[string]json.RawMessage{}
		for _, name := range names {
			vals[name] = s.pickValue(name)
		}
		s.write(d, k, vals, false)
		return d
	}
	switch rapid.SampledFrom([]string{"text", "delete", "undelete", "delete by edit"}).Draw(s.t, "entry edit") {
	case "text":
		s.write(d, k, map[string]json.RawMessage{syncproto.FieldText: s.pickValue(syncproto.FieldText)}, false)
	case "delete":
		s.write(d, k, nil, true)
	case "undelete":
		s.write(d, k, map[string]json.RawMessage{syncproto.FieldDeleted: json.RawMessage("false")}, false)
	case "delete by edit":
		s.write(d, k, map[string]json.RawMessage{syncproto.FieldDeleted: json.RawMessage("true")}, false)
	}
	return d
}

// resolve has a device resolve one conflict it sees: keep one of the
// values, write a new one, or for a deletion, delete again or keep.
func (s *propSim) resolve() *propDev {
	d := s.pickDev("resolver")
	k := s.pickKey()
	if !s.created(d, k) {
		s.logf("%s does not have %s yet", d.id, k)
		return nil
	}
	cs := d.recs[k].Conflicts()
	if len(cs) == 0 {
		s.logf("%s sees no conflict on %s", d.id, k)
		return nil
	}
	c := cs[rapid.IntRange(0, len(cs)-1).Draw(s.t, "conflict")]
	s.logf("%s resolves %s.%s", d.id, k, c.Field)
	if c.Field == syncproto.FieldDeleted {
		if rapid.Bool().Draw(s.t, "delete again") {
			s.write(d, k, nil, true)
		} else {
			s.write(d, k, map[string]json.RawMessage{syncproto.FieldDeleted: json.RawMessage("false")}, false)
		}
	} else {
		i := rapid.IntRange(0, len(c.Values)).Draw(s.t, "keep value (last: new value)")
		data := s.pickValue(c.Field)
		if i < len(c.Values) {
			data = c.Values[i].Data
		}
		s.write(d, k, map[string]json.RawMessage{c.Field: data}, false)
	}
	// The resolution settles the conflict on the resolver's replica.
	for _, c2 := range d.recs[k].Conflicts() {
		if c2.Field == c.Field {
			s.fatalf("%s: conflict on %s remains after resolving: %s", d.id, c.Field, s.json(d.recs[k]))
		}
	}
	return d
}

// deliverable reports whether change c may reach d in the current mode.
func (s *propSim) deliverable(c *propChange, d *propDev) bool {
	if !s.causal {
		return true
	}
	for dot := range c.seen {
		if !d.known[c.ch.Key()][dot] {
			return false
		}
	}
	return true
}

func (s *propSim) deliverChange() *propDev {
	c := s.changes[rapid.IntRange(0, len(s.changes)-1).Draw(s.t, "change")]
	d := s.pickDev("to")
	server := c.server != 0 && rapid.Bool().Draw(s.t, "server's copy")
	if !s.deliverable(c, d) {
		s.logf("change %s:%d to %s: held back (not causal)", c.dev, c.ch.Seq, d.id)
		return nil
	}
	s.logf("change %s:%d (server copy %v) to %s", c.dev, c.ch.Seq, server, d.id)
	s.receiveChange(d, c, server)
	return d
}

func (s *propSim) receiveChange(d *propDev, c *propChange, server bool) {
	k := c.ch.Key()
	s.apply(d, k, c.state(server))
	d.known[k][c.dot()] = true
}

func (s *propSim) deliverState() *propDev {
	from := s.pickDev("from")
	to := s.pickDev("to")
	k := s.pickKey()
	s.logf("state of %s from %s to %s", k, from.id, to.id)
	s.receiveState(to, from, k)
	return to
}

func (s *propSim) receiveState(to, from *propDev, k syncproto.Key) {
	s.apply(to, k, from.recs[k])
	for dot := range from.known[k] {
		to.known[k][dot] = true
	}
}

// push has the server accept a change: it bounds the stamp with its own
// clock, re-stamping one too far ahead.
func (s *propSim) push() {
	c := s.changes[rapid.IntRange(0, len(s.changes)-1).Draw(s.t, "change")]
	if c.server != 0 {
		s.logf("push of %s:%d again: already stored at %v", c.dev, c.ch.Seq, c.server)
		return
	}
	st, re := s.server.Bound(c.ch.Stamp)
	if re && st >= c.ch.Stamp {
		s.fatalf("server re-stamped %v to %v, not lower", c.ch.Stamp, st)
	}
	if !re && st != c.ch.Stamp {
		s.fatalf("server changed stamp %v to %v without re-stamping", c.ch.Stamp, st)
	}
	c.server = st
	if re {
		s.restamps++
		s.stamps[c.dot()] = min(s.stamps[c.dot()], st)
	}
	s.logf("push %s:%d at %v: server stores %v (re-stamped %v)", c.dev, c.ch.Seq, c.ch.Stamp, st, re)
}

// finish delivers every copy of every change to every replica, each in its
// own random order with duplicates (held back in causal mode until
// causal), plus whole states, and adds two observers that start empty.
func (s *propSim) finish() []*propDev {
	type item struct {
		c      *propChange
		server bool
	}
	var items []item
	for _, c := range s.changes {
		items = append(items, item{c, false})
		if c.server != 0 && c.server != c.ch.Stamp {
			items = append(items, item{c, true})
		}
	}
	for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(items)-1), 0, 8).Draw(s.t, "duplicated deliveries") {
		items = append(items, items[i])
	}
	replicas := slices.Clone(s.devs)
	for i := range 2 {
		replicas = append(replicas, newPropDev(fmt.Sprintf("observer%d", i), s.keys))
	}
	s.logf("final delivery to all")
	for _, d := range replicas {
		if rapid.Bool().Draw(s.t, "state first") {
			from := s.devs[rapid.IntRange(0, len(s.devs)-1).Draw(s.t, "from")]
			for _, k := range s.keys {
				s.receiveState(d, from, k)
			}
		}
		pending := rapid.Permutation(items).Draw(s.t, "final order for "+d.id)
		for len(pending) > 0 {
			var later []item
			for _, it := range pending {
				if s.deliverable(it.c, d) {
					s.receiveChange(d, it.c, it.server)
				} else {
					later = append(later, it)
				}
			}
			if len(later) == len(pending) {
				s.fatalf("final delivery to %s stuck with %d changes held back", d.id, len(later))
			}
			pending = later
		}
	}
	return replicas
}

// checkConverged fails unless all replicas hold identical records and
// agree on Conflicts and Deleted.
func (s *propSim) checkConverged(replicas []*propDev) {
	for _, k := range s.keys {
		ref := replicas[0].recs[k]
		want := s.json(ref)
		wantC := s.json(ref.Conflicts())
		for _, d := range replicas[1:] {
			r := d.recs[k]
			if got := s.json(r); got != want {
				s.fatalf("%s: %s differs from %s:\n%s\n%s", k, d.id, replicas[0].id, got, want)
			}
			if got := s.json(r.Conflicts()); got != wantC {
				s.fatalf("%s: %s conflicts %s, %s has %s", k, d.id, got, replicas[0].id, wantC)
			}
			if r.Deleted() != ref.Deleted() {
				s.fatalf("%s: %s Deleted()=%v, %s %v", k, d.id, r.Deleted(), replicas[0].id, ref.Deleted())
			}
		}
	}
}

// checkReplica checks d's replicas against the true history. final means
// every write has reached d, through every path.
func (s *propSim) checkReplica(d *propDev, final bool) {
	for _, k := range s.keys {
		r := d.recs[k]
		if err := r.Validate(); err != nil {
			s.fatalf("%s: %s's replica is invalid: %v: %s", k, d.id, err, s.json(r))
		}
		s.checkLive(d, k, final)
	}
}

// propOrder sorts values as every replica must show them: highest stamp,
// then greater device, then greater sequence.
func propOrder(a, b syncproto.Value) int {
	switch {
	case a.Stamp != b.Stamp:
		if a.Stamp > b.Stamp {
			return -1
		}
		return 1
	case a.Device != b.Device:
		return -strings.Compare(a.Device, b.Device)
	default:
		if a.Seq > b.Seq {
			return -1
		}
		return 1
	}
}

// checkLive checks d's replica of k against the writes d has received.
//
// In causal mode, and at the end in any mode, a field's live values are
// exactly the received writes that no other received write's writer had
// seen: no write is lost unless a person who saw it replaced it, and a
// write that saw another always replaces it, whatever the stamps. In
// arbitrary mode before the end a replica may have learnt from a change
// state that a write it never received was replaced, so only this holds:
// every live value is a received write, and none was seen by the writer of
// another live value of its field.
func (s *propSim) checkLive(d *propDev, k syncproto.Key, final bool) {
	r := d.recs[k]
	known := d.known[k]
	exact := final || s.causal
	byField := map[string][]*propWrite{}
	for _, w := range s.writes {
		if w.key == k && known[w.dot] {
			byField[w.field] = append(byField[w.field], w)
		}
	}
	live := map[string][]*propWrite{} // expected live writes per field
	for field, ws := range byField {
		for _, x := range ws {
			replaced := false
			for _, y := range ws {
				if y != x && y.seen[x.dot] {
					replaced = true
					break
				}
			}
			if !replaced {
				live[field] = append(live[field], x)
			}
		}
	}
	for _, field := range slices.Sorted(maps.Keys(r.Fields)) {
		if _, ok := byField[field]; !ok {
			s.fatalf("%s: %s holds field %s but received no write of it: %s", k, d.id, field, s.json(r))
		}
	}
	actual := map[string][]*propWrite{} // the writes of the live values
	for _, field := range slices.Sorted(maps.Keys(byField)) {
		got := r.Fields[field].Values
		byDot := map[syncproto.Dot]*propWrite{}
		for _, w := range byField[field] {
			byDot[w.dot] = w
		}
		for _, v := range got {
			w, ok := byDot[v.Dot()]
			if !ok {
				s.fatalf("%s.%s on %s: live value %s:%d was never received", k, field, d.id, v.Device, v.Seq)
			}
			actual[field] = append(actual[field], w)
			if string(v.Data) != w.data {
				s.fatalf("%s.%s on %s: value %s:%d holds %s, was written as %s", k, field, d.id, v.Device, v.Seq, v.Data, w.data)
			}
			for _, u := range got {
				if u.Dot() != v.Dot() && byDot[u.Dot()] != nil && byDot[u.Dot()].seen[v.Dot()] {
					s.fatalf("%s.%s on %s: %s:%d is live beside %s:%d, whose writer had seen it: %s", k, field, d.id, v.Device, v.Seq, u.Device, u.Seq, s.json(r))
				}
			}
		}
		if !slices.IsSortedFunc(got, propOrder) {
			s.fatalf("%s.%s on %s: values not in winner order: %s", k, field, d.id, s.json(got))
		}
		if !exact {
			continue
		}
		var gotDots, wantDots []string
		for _, v := range got {
			gotDots = append(gotDots, fmt.Sprintf("%s:%d", v.Device, v.Seq))
		}
		want := slices.Clone(live[field])
		if final {
			// Every copy has arrived: each value carries its dot's lowest
			// stamp, and the order is the one the stamps dictate.
			slices.SortFunc(want, func(a, b *propWrite) int {
				return propOrder(syncproto.Value{Device: a.dot.Device, Seq: a.dot.Seq, Stamp: s.stamps[a.dot]},
					syncproto.Value{Device: b.dot.Device, Seq: b.dot.Seq, Stamp: s.stamps[b.dot]})
			})
			for i, v := range got {
				if i < len(want) && v.Dot() == want[i].dot && v.Stamp != s.stamps[v.Dot()] {
					s.fatalf("%s.%s on %s: %s:%d at %v, want its lowest stamp %v", k, field, d.id, v.Device, v.Seq, v.Stamp, s.stamps[v.Dot()])
				}
			}
		} else {
			slices.SortFunc(gotDots, strings.Compare)
		}
		for _, w := range want {
			wantDots = append(wantDots, fmt.Sprintf("%s:%d", w.dot.Device, w.dot.Seq))
		}
		if !final {
			slices.SortFunc(wantDots, strings.Compare)
		}
		if !slices.Equal(gotDots, wantDots) {
			s.fatalf("%s.%s on %s: live %v, want %v (the writes no received write's writer had seen)\nreplica: %s",
				k, field, d.id, gotDots, wantDots, s.json(r))
		}
		conflicted := false
		for _, w := range want[min(1, len(want)):] {
			if w.data != want[0].data {
				conflicted = true
			}
		}
		if r.Fields[field].Conflicted() != conflicted {
			s.fatalf("%s.%s on %s: Conflicted()=%v, want %v: %s", k, field, d.id, !conflicted, conflicted, s.json(r))
		}
	}
	if k == propEntry {
		s.checkDeleted(d, actual)
	}
}

// checkDeleted checks Deleted and the _deleted conflict of d's entry, given
// the writes of its live values.
//
// An entry is deleted iff every live _deleted value is true and every live
// value of every other field was seen by the writer of one of them. Edit
// and Delete implement "seen" as the deleter's record context, one version
// vector over all fields; it equals what the deleter had received when its
// knowledge is causally closed. In arbitrary mode a deleter that received a
// device's later write of one field but not its earlier write of another
// covers the earlier one without having seen it (see
// TestMergeDeleteCoversNeedCausalDelivery), so only one direction is
// checked there: what the deleters saw is covered.
func (s *propSim) checkDeleted(d *propDev, live map[string][]*propWrite) {
	exact := s.causal
	r := d.recs[propEntry]
	dels := live[syncproto.FieldDeleted]
	allTrue := len(dels) > 0
	anyTrue := false
	for _, w := range dels {
		allTrue = allTrue && w.data == "true"
		anyTrue = anyTrue || w.data == "true"
	}
	var edited []string
	for _, field := range slices.Sorted(maps.Keys(live)) {
		if field == syncproto.FieldDeleted {
			continue
		}
		for _, x := range live[field] {
			seen := false
			for _, y := range dels {
				if y.dot == x.dot || y.seen[x.dot] {
					seen = true
				}
			}
			if !seen {
				edited = append(edited, field)
				break
			}
		}
	}
	want := allTrue && len(edited) == 0
	var delConflict *syncproto.Conflict
	for _, c := range r.Conflicts() {
		if c.Field == syncproto.FieldDeleted {
			delConflict = &c
		}
	}
	switch {
	case !exact:
		if want && (!r.Deleted() || delConflict != nil) {
			s.fatalf("%s: every live value was seen by a live deletion, yet Deleted()=%v, conflicts %s: %s",
				d.id, r.Deleted(), s.json(r.Conflicts()), s.json(r))
		}
		if !allTrue && r.Deleted() {
			s.fatalf("%s: Deleted() with a live _deleted=false: %s", d.id, s.json(r))
		}
	case r.Deleted() != want:
		s.fatalf("%s: Deleted()=%v, want %v (live _deleted all true: %v, edited unseen by deleters: %v): %s",
			d.id, r.Deleted(), want, allTrue, edited, s.json(r))
	case anyTrue && !allTrue:
		if delConflict == nil || delConflict.Edited != nil {
			s.fatalf("%s: live _deleted true and false, want an ordinary conflict, got %s", d.id, s.json(r.Conflicts()))
		}
	case allTrue && len(edited) > 0:
		if delConflict == nil || !slices.Equal(delConflict.Edited, edited) {
			s.fatalf("%s: deletion concurrent with edits of %v, want a conflict naming them, got %s: %s", d.id, edited, s.json(r.Conflicts()), s.json(r))
		}
	case delConflict != nil:
		s.fatalf("%s: unexpected conflict on _deleted: %s", d.id, s.json(delConflict))
	}
}

// TestPropertyJoinAlgebra: Record.Join and JoinField are commutative,
// associative and idempotent, and never modify their argument, on states
// taken from simulated replicas and changes.
func TestPropertyJoinAlgebra(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := newPropSim(t, propConfig{maxDevs: 4, maxSteps: 25, maxSkew: 3 * time.Hour})
		s.run()
		for _, c := range s.changes {
			k := c.ch.Key()
			empty := &syncproto.Record{Collection: k.Collection, ID: k.ID}
			s.snaps[k] = append(s.snaps[k], propJoin(empty, c.state(false)))
			if c.server != 0 {
				s.snaps[k] = append(s.snaps[k], propJoin(empty, c.state(true)))
			}
		}
		for range 4 {
			k := s.pickKey()
			snaps := s.snaps[k]
			pick := func(label string) *syncproto.Record {
				return snaps[rapid.IntRange(0, len(snaps)-1).Draw(t, label)]
			}
			a, b, c := pick("a"), pick("b"), pick("c")
			propCheckAlgebra(s, a, b, c)
		}
	})
}

func propJoin(a, b *syncproto.Record) *syncproto.Record {
	out := a.Clone()
	out.Join(b.Clone())
	return out
}

func propCheckAlgebra(s *propSim, a, b, c *syncproto.Record) {
	eq := func(what string, x, y any) {
		if jx, jy := s.json(x), s.json(y); jx != jy {
			s.fatalf("%s:\n%s\n%s\na=%s\nb=%s\nc=%s", what, jx, jy, s.json(a), s.json(b), s.json(c))
		}
	}
	eq("a⊔b = b⊔a", propJoin(a, b), propJoin(b, a))
	eq("(a⊔b)⊔c = a⊔(b⊔c)", propJoin(propJoin(a, b), c), propJoin(a, propJoin(b, c)))
	eq("a⊔a = a", propJoin(a, a), a)
	eq("(a⊔b)⊔b = a⊔b", propJoin(propJoin(a, b), b), propJoin(a, b))

	// Join reads its argument without changing it, also when the result
	// is joined further.
	before := s.json(b)
	r := a.Clone()
	r.Join(b)
	r.Join(c)
	r.Join(a)
	eq("b after r.Join(b)", s.json(b), before)

	for _, name := range slices.Sorted(maps.Keys(propJoin(propJoin(a, b), c).Fields)) {
		fa, fb, fc := a.Fields[name], b.Fields[name], c.Fields[name]
		j := syncproto.JoinField
		eq(name+": a⊔b = b⊔a", j(fa, fb), j(fb, fa))
		eq(name+": (a⊔b)⊔c = a⊔(b⊔c)", j(j(fa, fb), fc), j(fa, j(fb, fc)))
		eq(name+": a⊔a = a", j(fa, fa), j(fa, syncproto.Field{}))
		if len(fa.Values) > 0 {
			eq(name+": a⊔⊥ = a", j(fa, syncproto.Field{}), fa)
		}
	}
}

// TestPropertyConvergence: whatever the schedule, once every replica has
// received every change (in its own order, with duplicates), all replicas
// are identical and agree on Conflicts and Deleted.
func TestPropertyConvergence(t *testing.T) {
	var st propStats
	rapid.Check(t, func(t *rapid.T) {
		s := newPropSim(t, propConfig{maxDevs: 5, maxSteps: 80, maxSkew: 3 * time.Hour})
		s.run()
		replicas := s.finish()
		s.checkConverged(replicas)
		st.add(s, replicas)
	})
	t.Log(&st)
}

// TestPropertySurvival: at every step (causal mode) and at the end (both
// modes), each field's live values are exactly the writes no writer had
// seen and replaced; deletion is exact in causal mode (see checkDeleted).
func TestPropertySurvival(t *testing.T) {
	var st propStats
	rapid.Check(t, func(t *rapid.T) {
		s := newPropSim(t, propConfig{maxDevs: 5, maxSteps: 80, maxSkew: 3 * time.Hour, exact: true})
		s.run()
		replicas := s.finish()
		for _, d := range replicas {
			s.checkReplica(d, true)
		}
		st.add(s, replicas)
	})
	t.Log(&st)
}

// TestPropertyClockSkew: with clocks hours apart and the server
// re-stamping, a write that saw another replaces it even at a lower stamp,
// and the shown winner among concurrent writes is the same on every
// replica whatever the delivery order (highest lowest-known stamp, then
// device, then sequence).
func TestPropertyClockSkew(t *testing.T) {
	var inversions, restamps int
	rapid.Check(t, func(t *rapid.T) {
		s := newPropSim(t, propConfig{maxDevs: 4, maxSteps: 30, titleOnly: true, maxSkew: 3 * time.Hour, mode: "arbitrary"})
		s.run()
		replicas := s.finish()
		s.checkConverged(replicas)
		for _, d := range replicas {
			s.checkReplica(d, true)
		}
		inversions += s.inversions
		restamps += s.restamps
	})
	// The generator must exercise what the property is about.
	t.Logf("%d writes replaced a higher-stamped write; %d changes re-stamped", inversions, restamps)
	if !t.Failed() && (inversions == 0 || restamps == 0) {
		t.Errorf("schedules made %d writes over a higher-stamped write and %d re-stamps; want some of each", inversions, restamps)
	}
}

// propStats summarises what the schedules of a property exercised.
type propStats struct {
	runs, changes, conflicts, delConflicts, deleted, causal int
}

func (st *propStats) add(s *propSim, replicas []*propDev) {
	st.runs++
	st.changes += len(s.changes)
	if s.causal {
		st.causal++
	}
	for _, k := range s.keys {
		r := replicas[0].recs[k]
		for _, c := range r.Conflicts() {
			if c.Field == syncproto.FieldDeleted {
				st.delConflicts++
			} else {
				st.conflicts++
			}
		}
		if r.Deleted() {
			st.deleted++
		}
	}
}

func (st *propStats) String() string {
	return fmt.Sprintf("%d runs (%d causal), %d changes; at the end %d field conflicts, %d deletion conflicts, %d deleted entries",
		st.runs, st.causal, st.changes, st.conflicts, st.delConflicts, st.deleted)
}
