package syncproto

// Record's JSON codec, written out by hand. Records are the bulk of every
// pull, push acknowledgement and store write on both sides, and
// encoding/json spent most of a cold pull's CPU on them through reflection
// (BENCHMARKS.md). The bytes and the decoded values are exactly those of
// encoding/json for the struct tags on Record, Field and Value: the same
// encoding (keys in tag order, maps sorted, values compacted), and the
// same decoding rules, down to its quirks (keys matched case-insensitively,
// unknown keys ignored, null leaving a string or number as it was, a
// repeated key decoding into what the first one left). recordjson_test.go
// checks both against encoding/json itself, by table and by fuzzing.

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// MarshalJSON encodes r as encoding/json encodes its fields.
func (r Record) MarshalJSON() ([]byte, error) { return r.appendJSON(nil) }

// appendJSON appends r's encoding to b.
func (r *Record) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"coll":`...)
	b = appendString(b, string(r.Collection))
	b = append(b, `,"id":`...)
	b = appendString(b, r.ID)
	if r.Area != "" {
		b = append(b, `,"area":`...)
		b = appendString(b, r.Area)
	}
	b = append(b, `,"fields":`...)
	b, err := appendFields(b, r.Fields)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendFields appends a record's fields: null for nil, names sorted.
func appendFields(b []byte, fields map[string]Field) ([]byte, error) {
	if fields == nil {
		return append(b, "null"...), nil
	}
	b = append(b, '{')
	for i, name := range sortedKeys(fields) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, name)
		b = append(b, ':')
		f := fields[name]
		var err error
		if b, err = f.appendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

func (f *Field) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"vals":`...)
	if f.Values == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range f.Values {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = f.Values[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	b = append(b, `,"seen":`...)
	b = appendVersions(b, f.Seen)
	return append(b, '}'), nil
}

func (v *Value) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"dev":`...)
	b = appendString(b, v.Device)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, v.Seq, 10)
	b = append(b, `,"at":`...)
	b = appendStamp(b, v.Stamp)
	b = append(b, `,"val":`...)
	b, err := appendRaw(b, v.Data)
	if err != nil {
		return nil, fmt.Errorf("syncproto: value of %s:%d: %w", v.Device, v.Seq, err)
	}
	if len(v.Covers) > 0 {
		b = append(b, `,"covers":`...)
		b = appendVersions(b, v.Covers)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON decodes r as encoding/json would decode its fields.
func (r *Record) UnmarshalJSON(data []byte) error {
	d := &jdec{data: data}
	d.record(r)
	if d.err == nil && skipWS(data, d.i) != len(data) {
		d.fail("record is followed by more data (at byte %d)", d.i)
	}
	return d.err
}

// jdec decodes one record. The first error stops it: encoding/json goes on
// after a type error to fill in the rest, but a record that fails to
// decode is thrown away whole, so where it stops does not matter.
type jdec struct {
	data []byte
	i    int
	err  error
	path []string // struct fields entered, for type errors
}

func (d *jdec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = Errorf(ErrMalformed, format, args...)
	}
}

// typeError reports a value of the wrong JSON type as encoding/json does,
// so that callers describe it the same way.
func (d *jdec) typeError(what string, want reflect.Type, start int) {
	if d.err == nil {
		field := ""
		for i, p := range d.path {
			if i > 0 {
				field += "."
			}
			field += p
		}
		d.err = &json.UnmarshalTypeError{Value: what, Type: want, Offset: int64(start), Field: field}
	}
}

func (d *jdec) ws() { d.i = skipWS(d.data, d.i) }

// peek returns the next byte after white space, or 0 at the end.
func (d *jdec) peek() byte {
	d.ws()
	if d.i >= len(d.data) {
		return 0
	}
	return d.data[d.i]
}

// skip passes over one value, whatever it is.
func (d *jdec) skip() {
	end, ok := scanValue(d.data, d.i)
	if !ok {
		d.fail("record is not valid JSON (at byte %d)", end)
		return
	}
	d.i = end
}

// kind names the JSON type of the value at d.i, as encoding/json's type
// errors do.
func (d *jdec) kind() string {
	switch d.peek() {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	case 'n':
		return "null"
	}
	return "number"
}

// isNull consumes a null literal if one comes next.
func (d *jdec) isNull() bool {
	if d.peek() == 'n' {
		end, ok := scanLiteral(d.data, d.i, "null")
		if !ok {
			d.fail("record is not valid JSON (at byte %d)", d.i)
			return true
		}
		d.i = end
		return true
	}
	return false
}

// object calls fn for each member of the object at d.i, with its key
// folded as encoding/json matches keys; fn must consume the value.
func (d *jdec) object(fn func(key string)) {
	d.i++ // '{'
	if d.peek() == '}' {
		d.i++
		return
	}
	for d.err == nil {
		if d.peek() != '"' {
			d.fail("record is not valid JSON (at byte %d)", d.i)
			return
		}
		key, ok := d.str()
		if !ok {
			return
		}
		if d.peek() != ':' {
			d.fail("record is not valid JSON (at byte %d)", d.i)
			return
		}
		d.i++
		d.ws()
		fn(key)
		if d.err != nil {
			return
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return
		default:
			d.fail("record is not valid JSON (at byte %d)", d.i)
			return
		}
	}
}

// str reads the string at d.i, decoded as encoding/json decodes strings.
func (d *jdec) str() (string, bool) {
	start := d.i
	end, ok := scanString(d.data, start)
	if !ok {
		d.fail("record is not valid JSON (at byte %d)", end)
		return "", false
	}
	d.i = end
	raw := d.data[start+1 : end-1]
	for _, c := range raw {
		if c == '\\' || c >= utf8.RuneSelf {
			// Escapes, or bytes that may not be UTF-8 (which encoding/json
			// replaces): its own decoder.
			var s string
			if err := json.Unmarshal(d.data[start:end], &s); err != nil {
				d.fail("record is not valid JSON (at byte %d)", start)
				return "", false
			}
			return s, true
		}
	}
	return string(raw), true
}

// stringInto reads a string value into *dst; null leaves it as it was.
func (d *jdec) stringInto(dst *string, t reflect.Type) {
	if d.isNull() {
		return
	}
	if d.peek() != '"' {
		d.typeError(d.kind(), t, d.i)
		return
	}
	if s, ok := d.str(); ok {
		*dst = s
	}
}

var (
	rtString       = reflect.TypeFor[string]()
	typeCollection = reflect.TypeFor[Collection]()
	typeUint64     = reflect.TypeFor[uint64]()
	typeFields     = reflect.TypeFor[map[string]Field]()
	typeField      = reflect.TypeFor[Field]()
	typeValues     = reflect.TypeFor[[]Value]()
	typeValue      = reflect.TypeFor[Value]()
	typeVersions   = reflect.TypeFor[Versions]()
	typeRecord     = reflect.TypeFor[Record]()
)

// uintInto reads an unsigned integer into *dst; null leaves it as it was.
func (d *jdec) uintInto(dst *uint64) {
	if d.isNull() {
		return
	}
	c := d.peek()
	if c != '-' && (c < '0' || c > '9') {
		d.typeError(d.kind(), typeUint64, d.i)
		d.skip()
		return
	}
	start := d.i
	end, ok := scanNumber(d.data, start)
	if !ok {
		d.fail("record is not valid JSON (at byte %d)", end)
		return
	}
	d.i = end
	n, err := strconv.ParseUint(string(d.data[start:end]), 10, 64)
	if err != nil {
		d.typeError("number "+string(d.data[start:end]), typeUint64, start)
		return
	}
	*dst = n
}

// fold is encoding/json's key folding: ASCII upper case, and every other
// rune mapped through lower then upper case, so that "seq" and "SEQ" (and
// "ſeq", with a long s) name the same field.
func fold(key string) string {
	ascii := true
	for i := 0; i < len(key); i++ {
		if c := key[i]; c >= utf8.RuneSelf {
			ascii = false
			break
		} else if c >= 'a' && c <= 'z' {
			ascii = false
		}
	}
	if ascii {
		return key
	}
	out := make([]byte, 0, len(key))
	for _, r := range key {
		if r < utf8.RuneSelf {
			if r >= 'a' && r <= 'z' {
				r -= 'a' - 'A'
			}
			out = append(out, byte(r))
			continue
		}
		out = utf8.AppendRune(out, unicode.ToUpper(unicode.ToLower(r)))
	}
	return string(out)
}

// field matches a member's key to one of names (lower-case ASCII), exactly
// or as encoding/json folds keys, and returns the name or "".
func field(key string, names ...string) string {
	for _, n := range names {
		if key == n {
			return n
		}
	}
	f := fold(key)
	for _, n := range names {
		if f == fold(n) {
			return n
		}
	}
	return ""
}

func (d *jdec) record(r *Record) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeRecord, d.i)
		return
	}
	d.object(func(key string) {
		switch field(key, "coll", "id", "area", "fields") {
		case "coll":
			d.path = append(d.path, "coll")
			s := string(r.Collection)
			d.stringInto(&s, typeCollection)
			r.Collection = Collection(s)
		case "id":
			d.path = append(d.path, "id")
			d.stringInto(&r.ID, rtString)
		case "area":
			d.path = append(d.path, "area")
			d.stringInto(&r.Area, rtString)
		case "fields":
			d.path = append(d.path, "fields")
			d.fields(&r.Fields)
		default:
			d.skip()
			return
		}
		d.path = d.path[:len(d.path)-1]
	})
}

func (d *jdec) fields(m *map[string]Field) {
	if d.isNull() {
		*m = nil
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeFields, d.i)
		d.skip()
		return
	}
	if *m == nil {
		*m = map[string]Field{}
	}
	d.object(func(name string) {
		var f Field // each member decodes into a fresh value
		d.field(&f)
		(*m)[name] = f
	})
}

func (d *jdec) field(f *Field) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeField, d.i)
		d.skip()
		return
	}
	d.object(func(key string) {
		switch field(key, "vals", "seen") {
		case "vals":
			d.path = append(d.path, "vals")
			list(d, &f.Values, typeValues, d.value)
		case "seen":
			d.path = append(d.path, "seen")
			d.versions(&f.Seen)
		default:
			d.skip()
			return
		}
		d.path = d.path[:len(d.path)-1]
	})
}

func (d *jdec) value(v *Value) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeValue, d.i)
		d.skip()
		return
	}
	d.object(func(key string) {
		switch field(key, "dev", "seq", "at", "val", "covers") {
		case "dev":
			d.path = append(d.path, "dev")
			d.stringInto(&v.Device, rtString)
		case "seq":
			d.path = append(d.path, "seq")
			d.uintInto(&v.Seq)
		case "at":
			d.stampInto(&v.Stamp)
			return
		case "val":
			d.rawInto(&v.Data)
			return
		case "covers":
			d.path = append(d.path, "covers")
			d.versions(&v.Covers)
		default:
			d.skip()
			return
		}
		d.path = d.path[:len(d.path)-1]
	})
}

// stampInto decodes a stamp with Stamp's own decoder, null included (an
// error, as with encoding/json).
func (d *jdec) stampInto(st *Stamp) {
	start := d.i
	d.skip()
	if d.err == nil {
		if err := st.UnmarshalJSON(d.data[start:d.i]); err != nil {
			d.err = err
		}
	}
}

// rawInto keeps the next value's bytes as they came, as json.RawMessage
// does, reusing *raw's storage.
func (d *jdec) rawInto(raw *json.RawMessage) {
	start := d.i
	d.skip()
	if d.err == nil {
		*raw = append((*raw)[:0], d.data[start:d.i]...)
	}
}

// versions decodes an object of counters into *vv, adding to a map that is
// already there, as encoding/json does.
func (d *jdec) versions(vv *Versions) {
	if d.isNull() {
		*vv = nil
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeVersions, d.i)
		d.skip()
		return
	}
	if *vv == nil {
		*vv = Versions{}
	}
	d.object(func(dev string) {
		var n uint64
		d.uintInto(&n)
		(*vv)[dev] = n
	})
}

// UnmarshalJSON decodes c as encoding/json would decode its fields, its
// records through Record's codec without encoding/json scanning each of
// them again first (it finds where a value ends before handing it to an
// Unmarshaler). Codec.Decode calls it on the payload directly: it checks
// the syntax of everything it reads or passes over, so encoding/json's
// validation pass over the whole payload is not needed either.
func (c *Changes) UnmarshalJSON(data []byte) error {
	d := &jdec{data: data}
	d.changes(c)
	if d.err == nil && skipWS(data, d.i) != len(data) {
		d.fail("changes message is followed by more data (at byte %d)", d.i)
	}
	return d.err
}

var typeChanges = reflect.TypeFor[Changes]()

func (d *jdec) changes(c *Changes) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeChanges, d.i)
		return
	}
	d.object(func(key string) {
		switch field(key, "records", "evicted", "checkpoint") {
		case "records":
			list(d, &c.Records, reflect.TypeFor[[]Record](), d.record)
		case "evicted":
			d.std(&c.Evicted)
		case "checkpoint":
			d.std(&c.Checkpoint)
		default:
			d.skip()
		}
	})
}

// std decodes the next value into v with encoding/json: small members not
// worth a codec of their own.
func (d *jdec) std(v any) {
	start := d.i
	d.skip()
	if d.err != nil {
		return
	}
	if err := json.Unmarshal(d.data[start:d.i], v); err != nil {
		d.err = err
	}
}

// list decodes an array into *xs as encoding/json decodes into a slice:
// element by element into the elements already there (a repeated key
// decodes over what the first left), then cut to the array's length; null
// is a nil slice and an empty array an empty one, not nil.
func list[T any](d *jdec, xs *[]T, t reflect.Type, elem func(*T)) {
	if d.isNull() {
		*xs = nil
		return
	}
	if d.peek() != '[' {
		d.typeError(d.kind(), t, d.i)
		d.skip()
		return
	}
	d.i++
	if d.peek() == ']' {
		d.i++
		*xs = []T{}
		return
	}
	n := 0
	for d.err == nil {
		if n >= len(*xs) {
			var zero T
			*xs = append(*xs, zero)
		}
		elem(&(*xs)[n])
		n++
		if d.err != nil {
			return
		}
		switch d.peek() {
		case ',':
			d.i++
			d.ws()
		case ']':
			d.i++
			*xs = (*xs)[:n]
			return
		default:
			d.fail("JSON is not valid (at byte %d)", d.i)
			return
		}
	}
}
