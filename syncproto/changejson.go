package syncproto

// Push and Change decoding by hand, in the style of recordjson.go and with
// the same guarantee: exactly what encoding/json gives for the struct tags,
// checked against it in changejson_test.go. A push of 500 notes is decoded
// by a session goroutine that competes with the store's single writer for
// the server's two cores; encoding/json took ~14 µs per change of it.

import "reflect"

// UnmarshalJSON decodes c as encoding/json would decode its fields.
func (c *Change) UnmarshalJSON(data []byte) error {
	d := &jdec{data: data}
	d.change(c)
	if d.err == nil && skipWS(data, d.i) != len(data) {
		d.fail("change is followed by more data (at byte %d)", d.i)
	}
	return d.err
}

// UnmarshalJSON decodes p as encoding/json would decode its fields.
// Codec.Decode calls it on the payload directly, as for Changes.
func (p *Push) UnmarshalJSON(data []byte) error {
	d := &jdec{data: data}
	d.push(p)
	if d.err == nil && skipWS(data, d.i) != len(data) {
		d.fail("push message is followed by more data (at byte %d)", d.i)
	}
	return d.err
}

var (
	typePush   = reflect.TypeFor[Push]()
	typeChange = reflect.TypeFor[Change]()
	typeWrites = reflect.TypeFor[map[string]Write]()
	typeWrite  = reflect.TypeFor[Write]()
)

func (d *jdec) push(p *Push) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typePush, d.i)
		return
	}
	d.object(func(key string) {
		if field(key, "changes") == "" {
			d.skip()
			return
		}
		d.path = append(d.path, "changes")
		list(d, &p.Changes, reflect.TypeFor[[]Change](), d.change)
		d.path = d.path[:len(d.path)-1]
	})
}

func (d *jdec) change(c *Change) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeChange, d.i)
		d.skip()
		return
	}
	d.object(func(key string) {
		switch field(key, "seq", "coll", "id", "at", "fields") {
		case "seq":
			d.path = append(d.path, "seq")
			d.uintInto(&c.Seq)
		case "coll":
			d.path = append(d.path, "coll")
			s := string(c.Collection)
			d.stringInto(&s, typeCollection)
			c.Collection = Collection(s)
		case "id":
			d.path = append(d.path, "id")
			d.stringInto(&c.ID, rtString)
		case "at":
			d.stampInto(&c.Stamp)
			return
		case "fields":
			d.path = append(d.path, "fields")
			d.writes(&c.Fields)
		default:
			d.skip()
			return
		}
		d.path = d.path[:len(d.path)-1]
	})
}

func (d *jdec) writes(m *map[string]Write) {
	if d.isNull() {
		*m = nil
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeWrites, d.i)
		d.skip()
		return
	}
	if *m == nil {
		*m = map[string]Write{}
	}
	d.object(func(name string) {
		var w Write // each member decodes into a fresh value
		d.write(&w)
		(*m)[name] = w
	})
}

func (d *jdec) write(w *Write) {
	if d.isNull() {
		return
	}
	if d.peek() != '{' {
		d.typeError(d.kind(), typeWrite, d.i)
		d.skip()
		return
	}
	d.object(func(key string) {
		switch field(key, "val", "seen", "covers") {
		case "val":
			d.rawInto(&w.Data)
			return
		case "seen":
			d.path = append(d.path, "seen")
			d.versions(&w.Seen)
		case "covers":
			d.path = append(d.path, "covers")
			d.versions(&w.Covers)
		default:
			d.skip()
			return
		}
		d.path = d.path[:len(d.path)-1]
	})
}
