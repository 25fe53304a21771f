package syncproto

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// Dot names one write: the device that made it and the device's change
// sequence number. Devices number their changes 1, 2, 3, … and never reuse
// a number, so a dot is unique without coordination.
type Dot struct {
	Device string
	Seq    uint64
}

// Versions is a version vector: for each device, the highest change
// sequence number seen. Because a device sees each of its own writes before
// making the next, having seen dot (d, n) of a field implies having seen
// every earlier write of d to that field, and one number per device suffices.
type Versions map[string]uint64

// Covers reports whether v has seen dot d.
func (v Versions) Covers(d Dot) bool { return v[d.Device] >= d.Seq }

// Join returns the pointwise maximum of v and o as a new vector.
func (v Versions) Join(o Versions) Versions {
	out := make(Versions, max(len(v), len(o)))
	for d, n := range v {
		out[d] = n
	}
	for d, n := range o {
		if n > out[d] {
			out[d] = n
		}
	}
	return out
}

// with returns a copy of v that also covers d.
func (v Versions) with(d Dot) Versions {
	out := maps.Clone(v)
	if out == nil {
		out = make(Versions, 1)
	}
	if d.Seq > out[d.Device] {
		out[d.Device] = d.Seq
	}
	return out
}

// Value is one live value of a field: the write that put it there.
type Value struct {
	Device string          `json:"dev"`
	Seq    uint64          `json:"seq"`
	Stamp  Stamp           `json:"at"`
	Data   json.RawMessage `json:"val"`
	// Covers is set only on values of the _deleted field: what the deleting
	// device had seen of the whole record. An edit it did not cover makes
	// the deletion a conflict instead of a silent loss (PROTOCOL.md §6.3).
	Covers Versions `json:"covers,omitempty"`
}

// Dot returns the dot of the write that made v.
func (v Value) Dot() Dot { return Dot{v.Device, v.Seq} }

// ranksBefore reports whether a wins over b: the later stamp, then the
// greater device ID, then the greater sequence. The order is total, so
// every replica shows the same winner.
func (a Value) ranksBefore(b Value) bool {
	if a.Stamp != b.Stamp {
		return a.Stamp > b.Stamp
	}
	if a.Device != b.Device {
		return a.Device > b.Device
	}
	return a.Seq > b.Seq
}

// Field is the merge state of one named field: a multi-value register. It
// holds every write that no other known write has superseded, winner first,
// and the causal context of everything seen for the field.
type Field struct {
	Values []Value  `json:"vals"`
	Seen   Versions `json:"seen"`
}

// Winner returns the value every replica shows for the field.
func (f Field) Winner() (Value, bool) {
	if len(f.Values) == 0 {
		return Value{}, false
	}
	return f.Values[0], true
}

// Conflicted reports whether the field holds concurrent writes of different
// values. Concurrent writes of the same value are not a conflict.
func (f Field) Conflicted() bool {
	for _, v := range f.Values[min(1, len(f.Values)):] {
		if !bytes.Equal(v.Data, f.Values[0].Data) {
			return true
		}
	}
	return false
}

func (f Field) find(d Dot) (Value, bool) {
	for _, v := range f.Values {
		if v.Device == d.Device && v.Seq == d.Seq {
			return v, true
		}
	}
	return Value{}, false
}

// JoinField merges two states of one field. A value survives unless the
// other side has seen its dot without keeping it, which means a write that
// saw the value replaced it. The join is commutative, associative and
// idempotent, so replicas that see the same writes in any order, with
// duplicates, hold the same field.
func JoinField(a, b Field) Field {
	out := Field{Seen: a.Seen.Join(b.Seen)}
	for _, v := range a.Values {
		if w, ok := b.find(v.Dot()); ok {
			out.Values = append(out.Values, sameDot(v, w))
		} else if !b.Seen.Covers(v.Dot()) {
			out.Values = append(out.Values, v)
		}
	}
	for _, v := range b.Values {
		if _, ok := a.find(v.Dot()); !ok && !a.Seen.Covers(v.Dot()) {
			out.Values = append(out.Values, v)
		}
	}
	slices.SortFunc(out.Values, func(x, y Value) int {
		if x.ranksBefore(y) {
			return -1
		}
		if y.ranksBefore(x) {
			return 1
		}
		return 0
	})
	return out
}

// sameDot picks deterministically between two copies of one write. They
// differ only when the server re-stamped a write whose stamp was too far
// ahead (PROTOCOL.md §6.4): the lower stamp is the server's and wins.
func sameDot(a, b Value) Value {
	if a.Stamp != b.Stamp {
		if a.Stamp < b.Stamp {
			return a
		}
		return b
	}
	if c := bytes.Compare(a.Data, b.Data); c != 0 {
		if c < 0 {
			return a
		}
		return b
	}
	if len(a.Covers) > 0 || len(b.Covers) > 0 {
		a.Covers = a.Covers.Join(b.Covers)
	}
	return a
}

// Record is the merge state of one record: its identity, the area that
// scopes who may see it, and the state of each field.
//
// Area is not merged: for a case it follows the winner of the "area" field,
// for an entry it is its case's area, set by the server.
type Record struct {
	Collection Collection       `json:"coll"`
	ID         string           `json:"id"`
	Area       string           `json:"area,omitempty"`
	Fields     map[string]Field `json:"fields"`
}

// Key returns the record's key, unique across collections.
func (r *Record) Key() Key { return Key{r.Collection, r.ID} }

// Key names a record across collections.
type Key struct {
	Collection Collection `json:"coll"`
	ID         string     `json:"id"`
}

func (k Key) String() string { return string(k.Collection) + "/" + k.ID }

// Join merges state o into r. Both must be the same record. After the join
// a case's Area follows its area field; an entry takes o's Area if o names
// one (the server's filing), else keeps its own.
func (r *Record) Join(o *Record) {
	if r.Fields == nil {
		r.Fields = make(map[string]Field, len(o.Fields))
	}
	for name, f := range o.Fields {
		if cur, ok := r.Fields[name]; ok {
			r.Fields[name] = JoinField(cur, f)
		} else {
			r.Fields[name] = JoinField(Field{}, f)
		}
	}
	// Area is the server's to set: a state that names one (the server's
	// latest) wins, so an entry follows its case to a new area.
	if o.Area != "" {
		r.Area = o.Area
	}
	if r.Collection == Cases {
		if a, ok := r.String(FieldArea); ok {
			r.Area = a
		}
	}
}

// Clone returns a deep copy of r that shares no slices or maps with it.
func (r *Record) Clone() *Record {
	out := &Record{Collection: r.Collection, ID: r.ID, Area: r.Area, Fields: make(map[string]Field, len(r.Fields))}
	for name, f := range r.Fields {
		nf := Field{Seen: maps.Clone(f.Seen), Values: make([]Value, len(f.Values))}
		for i, v := range f.Values {
			v.Data = slices.Clone(v.Data)
			v.Covers = maps.Clone(v.Covers)
			nf.Values[i] = v
		}
		out.Fields[name] = nf
	}
	return out
}

// Get returns the winning value of a field, or false if the field has none.
func (r *Record) Get(name string) (json.RawMessage, bool) {
	f, ok := r.Fields[name]
	if !ok {
		return nil, false
	}
	v, ok := f.Winner()
	return v.Data, ok
}

// String returns the winning value of a string field.
func (r *Record) String(name string) (string, bool) {
	raw, ok := r.Get(name)
	if !ok {
		return "", false
	}
	if s, ok := plainString(raw); ok {
		return s, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// plainString returns the value of b if b is a JSON string that
// encoding/json would decode to its bytes between the quotes: no escapes,
// no control characters, valid UTF-8. Most stored values are; decoding
// them with encoding/json was a fifth of the server's record filing
// (BENCHMARKS.md, load).
func plainString(b []byte) (string, bool) {
	n := len(b)
	if n < 2 || b[0] != '"' || b[n-1] != '"' {
		return "", false
	}
	in := b[1 : n-1]
	for _, c := range in {
		if c < 0x20 || c == '"' || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}

// Context returns everything r has seen of the record: the join of every
// field's context. A deletion carries it as Covers.
func (r *Record) Context() Versions {
	var out Versions
	for _, f := range r.Fields {
		out = out.Join(f.Seen)
	}
	return out
}

// Conflict is a field that holds concurrent writes of different values, or
// a deletion concurrent with edits.
type Conflict struct {
	Field string `json:"field"`
	// Values holds the concurrent values, winner first.
	Values []Value `json:"values"`
	// Edited names, for a conflict on FieldDeleted, the fields edited
	// without the deleting device having seen the edit.
	Edited []string `json:"edited,omitempty"`
}

// Conflicts returns the record's open conflicts, ordered by field name.
func (r *Record) Conflicts() []Conflict {
	var out []Conflict
	for _, name := range slices.Sorted(maps.Keys(r.Fields)) {
		f := r.Fields[name]
		if f.Conflicted() {
			out = append(out, Conflict{Field: name, Values: f.Values})
		} else if name == FieldDeleted {
			if edited := r.editedSinceDelete(); len(edited) > 0 {
				out = append(out, Conflict{Field: name, Values: f.Values, Edited: edited})
			}
		}
	}
	return out
}

// Deleted reports whether the record is deleted: every live value of its
// _deleted field is true, and the deleting devices had seen every live value
// of every other field. A deletion concurrent with an edit is a conflict and
// the record stays visible until a person resolves it (PROTOCOL.md §6.3).
func (r *Record) Deleted() bool {
	f, ok := r.Fields[FieldDeleted]
	if !ok || len(f.Values) == 0 || f.Conflicted() {
		return false
	}
	if !bytes.Equal(f.Values[0].Data, jsonTrue) {
		return false
	}
	return len(r.editedSinceDelete()) == 0
}

var jsonTrue = []byte("true")

// editedSinceDelete returns the fields holding a live value that no live
// deletion had seen, if every live _deleted value is true.
func (r *Record) editedSinceDelete() []string {
	f := r.Fields[FieldDeleted]
	var covers Versions
	for _, v := range f.Values {
		if !bytes.Equal(v.Data, jsonTrue) {
			return nil
		}
		covers = covers.Join(v.Covers).with(v.Dot())
	}
	if len(f.Values) == 0 {
		return nil
	}
	var edited []string
	for name, g := range r.Fields {
		if name == FieldDeleted {
			continue
		}
		for _, v := range g.Values {
			if !covers.Covers(v.Dot()) {
				edited = append(edited, name)
				break
			}
		}
	}
	slices.Sort(edited)
	return edited
}

// Change is one device's write to one record: new values for some of its
// fields, each with the context it replaces. The device's ID is not in the
// change: the server takes it from the authenticated session, so no device
// can write in another's name. Seq is the change's ID on its device.
type Change struct {
	Seq        uint64           `json:"seq"`
	Collection Collection       `json:"coll"`
	ID         string           `json:"id"`
	Stamp      Stamp            `json:"at"`
	Fields     map[string]Write `json:"fields"`
}

// Write is the new value of one field in a change.
type Write struct {
	Data json.RawMessage `json:"val"`
	// Seen is the field's context as the writer saw it: the write replaces
	// every value it covers.
	Seen Versions `json:"seen,omitempty"`
	// Covers is set only on writes to _deleted: the whole record's context
	// as the deleting device saw it.
	Covers Versions `json:"covers,omitempty"`
}

// String returns the string the change writes to a field, and whether
// it writes one: false for a field it does not write or a value that is
// not a string.
func (c *Change) String(name string) (string, bool) {
	w, ok := c.Fields[name]
	if !ok {
		return "", false
	}
	if s, ok := plainString(w.Data); ok {
		return s, true
	}
	var s string
	if json.Unmarshal(w.Data, &s) != nil {
		return "", false
	}
	return s, true
}

// Key returns the key of the record the change writes.
func (c *Change) Key() Key { return Key{c.Collection, c.ID} }

// State returns the change as a record state made by device, ready to Join
// into a replica.
func (c *Change) State(device string) *Record {
	r := &Record{Collection: c.Collection, ID: c.ID, Fields: make(map[string]Field, len(c.Fields))}
	dot := Dot{device, c.Seq}
	for name, w := range c.Fields {
		r.Fields[name] = Field{
			Values: []Value{{Device: device, Seq: c.Seq, Stamp: c.Stamp, Data: w.Data, Covers: w.Covers}},
			Seen:   w.Seen.with(dot),
		}
	}
	return r
}

// Edit returns a change that sets fields of cur (nil for a new record) as
// the writing device sees it: each write replaces every value of its field
// that the device holds. Resolving a conflict is an Edit with the chosen
// value. The values must be canonical JSON (see Canonical).
func Edit(cur *Record, coll Collection, id string, seq uint64, at Stamp, values map[string]json.RawMessage) Change {
	ch := Change{Seq: seq, Collection: coll, ID: id, Stamp: at, Fields: make(map[string]Write, len(values))}
	for name, data := range values {
		w := Write{Data: data}
		if cur != nil {
			w.Seen = maps.Clone(cur.Fields[name].Seen)
		}
		if name == FieldDeleted && cur != nil {
			w.Covers = cur.Context()
		}
		ch.Fields[name] = w
	}
	return ch
}

// Delete returns a change that deletes cur (an entry) as the device sees it.
func Delete(cur *Record, seq uint64, at Stamp) Change {
	return Edit(cur, cur.Collection, cur.ID, seq, at, map[string]json.RawMessage{FieldDeleted: jsonTrue})
}

// Canonical returns raw re-encoded in the one form replicas compare: compact,
// object keys sorted, no HTML escaping, numbers as written.
//
// A value already in that form (a string, number, literal or array of
// them, as encoding/json writes it) is returned as it is, without being
// decoded and encoded again: the result then shares raw's bytes.
func Canonical(raw json.RawMessage) (json.RawMessage, error) {
	if n, ok := canonicalPrefix(raw, 0); ok && n == len(raw) {
		return raw[:n:n], nil
	}
	return canonicalSlow(raw)
}

// canonicalSlow is Canonical by decoding and encoding again: the
// definition that the fast path must agree with.
func canonicalSlow(raw json.RawMessage) (json.RawMessage, error) {
	if !json.Valid(raw) {
		return nil, Errorf(ErrBadValue, "value is not valid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, Errorf(ErrBadValue, "value is not JSON: %v", err)
	}
	if dec.More() {
		return nil, Errorf(ErrBadValue, "value has trailing data")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, Errorf(ErrBadValue, "value cannot be encoded: %v", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// maxCanonicalDepth bounds the nesting of arrays the fast path follows;
// deeper values take the slow path.
const maxCanonicalDepth = 16

// canonicalPrefix reports the length of the value at the start of b if it
// is exactly what canonicalSlow would make of it, and false if it is not
// or the fast path cannot tell (objects, deep nesting): then the slow path
// decides. It must never accept anything canonicalSlow would change.
func canonicalPrefix(b []byte, depth int) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	switch c := b[0]; {
	case c == '"':
		return canonicalString(b)
	case c == '-' || ('0' <= c && c <= '9'):
		return numberPrefix(b)
	case c == 't':
		return literalPrefix(b, "true")
	case c == 'f':
		return literalPrefix(b, "false")
	case c == 'n':
		return literalPrefix(b, "null")
	case c == '[':
		if depth >= maxCanonicalDepth {
			return 0, false
		}
		if len(b) >= 2 && b[1] == ']' {
			return 2, true
		}
		i := 1
		for {
			n, ok := canonicalPrefix(b[i:], depth+1)
			if !ok {
				return 0, false
			}
			i += n
			if i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case ',':
				i++
			case ']':
				return i + 1, true
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

func literalPrefix(b []byte, lit string) (int, bool) {
	if len(b) >= len(lit) && string(b[:len(lit)]) == lit {
		return len(lit), true
	}
	return 0, false
}

// numberPrefix accepts a JSON number token; decoded with UseNumber and
// encoded again it is written as it was.
func numberPrefix(b []byte) (int, bool) {
	i := 0
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		n := j - i
		i = j
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	return i, true
}

// canonicalString accepts a JSON string exactly as encoding/json writes
// its decoded value with HTML escaping off: UTF-8 as it is, except that
// '"', '\\', control characters, U+2028 and U+2029 are escaped, the way
// encoding/json escapes them (\n, \u001f, \u2028, …), and nothing else
// is. Invalid UTF-8 is not accepted: decoding replaces it.
func canonicalString(b []byte) (int, bool) {
	for i := 1; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, true
		case c == '\\':
			n := canonicalEscape(b[i:])
			if n == 0 {
				return 0, false
			}
			i += n
		case c < 0x20:
			return 0, false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
				return 0, false
			}
			i += size
		}
	}
	return 0, false
}

// canonicalEscape returns the length of the escape at the start of b if
// encoding/json writes that escape for the character it stands for, else 0.
func canonicalEscape(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	switch b[1] {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if len(b) < 6 {
			return 0
		}
		switch u := string(b[2:6]); {
		case u == "2028" || u == "2029":
			return 6
		case u[0] == '0' && u[1] == '0' && (u[2] == '0' || u[2] == '1') && isLowerHex(u[3]):
			switch c := (u[2]-'0')<<4 | hexVal(u[3]); c {
			case '\b', '\f', '\n', '\r', '\t':
				return 0 // written as \b, \f, \n, \r, \t
			}
			return 6
		}
	}
	return 0
}

func isLowerHex(c byte) bool { return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') }

func hexVal(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

// keyLess orders keys by collection, then ID.
func keyLess(a, b Key) int {
	if c := strings.Compare(string(a.Collection), string(b.Collection)); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}
