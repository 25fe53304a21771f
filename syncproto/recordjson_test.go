package syncproto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// The reference for Record's hand-written codec is encoding/json itself,
// on mirror types that carry the same tags and no methods.

type refValue struct {
	Device string          `json:"dev"`
	Seq    uint64          `json:"seq"`
	Stamp  Stamp           `json:"at"`
	Data   json.RawMessage `json:"val"`
	Covers Versions        `json:"covers,omitempty"`
}

type refField struct {
	Values []refValue `json:"vals"`
	Seen   Versions   `json:"seen"`
}

type refRecord struct {
	Collection Collection          `json:"coll"`
	ID         string              `json:"id"`
	Area       string              `json:"area,omitempty"`
	Fields     map[string]refField `json:"fields"`
}

// fromRef converts, keeping nil apart from empty as encoding/json does.
func fromRef(r refRecord) Record {
	out := Record{Collection: r.Collection, ID: r.ID, Area: r.Area}
	if r.Fields != nil {
		out.Fields = make(map[string]Field, len(r.Fields))
		for name, f := range r.Fields {
			var vs []Value
			if f.Values != nil {
				vs = make([]Value, len(f.Values))
				for i, v := range f.Values {
					vs[i] = Value(v)
				}
			}
			out.Fields[name] = Field{Values: vs, Seen: f.Seen}
		}
	}
	return out
}

func toRef(r Record) refRecord {
	out := refRecord{Collection: r.Collection, ID: r.ID, Area: r.Area}
	if r.Fields != nil {
		out.Fields = make(map[string]refField, len(r.Fields))
		for name, f := range r.Fields {
			var vs []refValue
			if f.Values != nil {
				vs = make([]refValue, len(f.Values))
				for i, v := range f.Values {
					vs[i] = refValue(v)
				}
			}
			out.Fields[name] = refField{Values: vs, Seen: f.Seen}
		}
	}
	return out
}

// checkDecode decodes data (after prior, into the same value, as
// encoding/json decodes into a value that already holds something) with
// Record's codec and with encoding/json, and reports any difference.
func checkDecode(t *testing.T, prior, data []byte) {
	t.Helper()
	var got Record
	var want refRecord
	if prior != nil {
		errGot, errWant := json.Unmarshal(prior, &got), json.Unmarshal(prior, &want)
		if (errGot == nil) != (errWant == nil) {
			t.Fatalf("prior %q: codec error %v, encoding/json error %v", prior, errGot, errWant)
		}
		if errGot != nil {
			return
		}
	}
	errGot := json.Unmarshal(data, &got)
	errWant := json.Unmarshal(data, &want)
	if (errGot == nil) != (errWant == nil) {
		t.Fatalf("%q: codec error %v, encoding/json error %v", data, errGot, errWant)
	}
	if errGot != nil {
		return
	}
	if w := fromRef(want); !reflect.DeepEqual(got, w) {
		t.Fatalf("%q decodes to\n%#v\nencoding/json gives\n%#v", data, got, w)
	}
	// Called directly, on bytes encoding/json has not checked first.
	var direct Record
	if prior == nil {
		if err := direct.UnmarshalJSON(data); err != nil && !bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
			t.Fatalf("%q: direct UnmarshalJSON failed where json.Unmarshal did not: %v", data, err)
		} else if err == nil && !reflect.DeepEqual(direct, got) {
			t.Fatalf("%q: direct UnmarshalJSON gives %#v, json.Unmarshal %#v", data, direct, got)
		}
	}
	checkEncode(t, got)
}

// checkEncode compares Record's encoding with encoding/json's, with HTML
// escaping off (Marshal) and on (json.Marshal).
func checkEncode(t *testing.T, r Record) {
	t.Helper()
	got, errGot := r.MarshalJSON()
	want, errWant := Marshal(toRef(r))
	if (errGot == nil) != (errWant == nil) {
		t.Fatalf("encode %#v: codec error %v, encoding/json error %v", r, errGot, errWant)
	}
	if errGot != nil {
		return
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encode %#v:\n got %s\nwant %s", r, got, want)
	}
	got, _ = json.Marshal(r)
	want, _ = json.Marshal(toRef(r))
	if !bytes.Equal(got, want) {
		t.Fatalf("json.Marshal %#v:\n got %s\nwant %s", r, got, want)
	}
}

var recordJSONCases = []string{
	`{"coll":"entries","id":"01HZENTRY","area":"Zuilen","fields":{"text":{"vals":[{"dev":"d1","seq":3,"at":"0000018f2a3b4c5d","val":"Visited; mould <behind> the wardrobe & more"}],"seen":{"d1":3}}}}`,
	`{"coll":"cases","id":"c1","fields":{"tags":{"vals":[{"dev":"d1","seq":1,"at":"0000018f2a3b4c5d","val":[ "a" , {"b" : 1.5e3 } ]},{"dev":"d2","seq":9,"at":"0000018F2A3B4C5E","val":null}],"seen":{"d2":9,"d1":1}},"_deleted":{"vals":[{"dev":"d1","seq":2,"at":"0000018f2a3b4c5d","val":true,"covers":{"d1":2,"d0":7}}],"seen":{"d1":2}}}}`,
	`null`,
	` { } `,
	`{"fields":null}`,
	`{"fields":{}}`,
	`{"fields":{"x":null}}`,
	`{"fields":{"x":{"vals":[],"seen":{}}}}`,
	`{"fields":{"x":{"vals":null,"seen":null}}}`,
	`{"fields":{"x":{"vals":[null,{}]}}}`,
	`{"COLL":"cases","Id":"a","AREA":"b","FIELDS":{"f":{"VALS":[{"DEV":"d","SEQ":1,"AT":"0000000000000001","VAL":1,"COVERS":{"d":1}}],"SEEN":{"d":1}}}}`,
	"{\"coll\":\"cases\",\"fields\":{\"f\":{\"vals\":[{\"\u017feq\":5}],\"\u017feen\":{\"d\":2}}}}", // long s folds to S
	`{"co\u006cl":"cases","id":"\u00e9t\u00e9","area":"Lombok \"Oost\"","fields":{"na\u006de":{"vals":[{"dev":"d\n1","seq":1,"at":"\u0030000000000000001","val":"x"}],"seen":{"d\n1":1}}}}`,
	"{\"id\":\"\xff\xfe bad utf-8\",\"fields\":{\"\xc3\":{\"seen\":{\"\xe2\x80\":1}}}}",
	`{"id":"a","id":"b","coll":"x","coll":null,"area":null}`,
	`{"fields":{"f":{"seen":{"a":1}}},"fields":{"g":{"seen":{"b":2}}}}`,
	`{"fields":{"f":{"seen":{"a":1},"seen":{"b":2},"vals":[{"dev":"a","seq":1,"val":1}],"vals":[{"seq":2}]}}}`,
	`{"fields":{"f":{"vals":[{"dev":"a","seq":1,"val":1,"covers":{"a":1}},{"dev":"b"}],"vals":[{"covers":{"b":2}}]}}}`,
	`{"unknown":{"deep":[1,2,{"x":null}]},"id":"x","fields":{"f":{"other":true,"vals":[{"extra":"y","seq":0}]}}}`,
	`{"fields":{"f":{"vals":[{"seq":null,"dev":null,"val":null}],"seen":{"a":null}}}}`,
	`{"fields":{"f":{"vals":[{"seq":18446744073709551615}]}}}`,
	// Each of these is an error for both.
	`{"fields":{"f":{"vals":[{"seq":18446744073709551616}]}}}`,
	`{"fields":{"f":{"vals":[{"seq":-1}]}}}`,
	`{"fields":{"f":{"vals":[{"seq":1.0}]}}}`,
	`{"fields":{"f":{"vals":[{"seq":"1"}]}}}`,
	`{"fields":{"f":{"vals":[{"at":null}]}}}`,
	`{"fields":{"f":{"vals":[{"at":"00000000000000g1"}]}}}`,
	`{"fields":{"f":{"vals":[{"at":12}]}}}`,
	`{"id":5}`,
	`{"coll":true}`,
	`{"fields":[]}`,
	`{"fields":{"f":[]}}`,
	`{"fields":{"f":{"vals":{}}}}`,
	`{"fields":{"f":{"vals":[1]}}}`,
	`{"fields":{"f":{"seen":[]}}}`,
	`{"fields":{"f":{"seen":{"a":"1"}}}}`,
	`[]`,
	`"record"`,
	`{"id":"x"`,
	`{"id":"x"} {}`,
	`{"id":"x",}`,
	`{"fields":{"f":{"vals":[{"val":tru}]}}}`,
	`{"fields":{"f":{"vals":[{"val":"\x"}]}}}`,
	"{\"id\":\"a\tb\"}",
	`{"fields":{"f":{"vals":[{"val":01}]}}}`,
	`{"fields":{"f":{"vals":[{"val":[1,]}]}}}`,
}

func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range recordJSONCases {
		checkDecode(t, nil, []byte(c))
	}
	// Decoding over a record that holds something already: encoding/json
	// fills into it, and so must the codec.
	prior := []byte(recordJSONCases[1])
	for _, c := range recordJSONCases {
		checkDecode(t, prior, []byte(c))
	}
}

func TestRecordEncodeMatchesEncodingJSON(t *testing.T) {
	v := func(dev string, seq uint64, data string) Value {
		var raw json.RawMessage
		if data != "-" {
			raw = json.RawMessage(data)
		}
		return Value{Device: dev, Seq: seq, Stamp: Stamp(seq<<20 | 7), Data: raw}
	}
	cases := []Record{
		{},
		{Collection: Cases, ID: "c1", Fields: map[string]Field{}},
		{Collection: Cases, ID: "c1", Area: "Zuilen", Fields: map[string]Field{
			"title":   {Values: []Value{v("d1", 1, `"Mould <in> the bedroom & hall"`)}, Seen: Versions{"d1": 1}},
			"tags":    {Values: []Value{v("d2", 4, ` [ "a", "b" ] `), v("d1", 2, `{"z":1, "a":[true,false,null]}`)}, Seen: Versions{"d2": 4, "d1": 2}},
			"empty":   {},
			"novals":  {Values: []Value{}, Seen: Versions{}},
			"nildata": {Values: []Value{v("d3", 1, "-")}},
		}},
		{Collection: "entries", ID: "é\"\\\x01\u2028", Area: "<Lombok>", Fields: map[string]Field{
			"te\txt": {Values: []Value{{Device: "d\x7f", Seq: 1, Data: json.RawMessage(`"\u00e9 \n"`), Covers: Versions{"b": 1, "a": 2, "\xff": 3}}}, Seen: Versions{"\xffdev": 1}},
		}},
		{ID: "bad", Fields: map[string]Field{"f": {Values: []Value{v("d", 1, `{"a":}`)}}}},
		{ID: "empty-data", Fields: map[string]Field{"f": {Values: []Value{{Device: "d", Seq: 1, Data: json.RawMessage{}}}}}},
	}
	for _, r := range cases {
		checkEncode(t, r)
	}
}

func FuzzRecordJSON(f *testing.F) {
	for _, c := range recordJSONCases {
		f.Add([]byte(c), false)
	}
	f.Add([]byte(recordJSONCases[0]), true)
	f.Fuzz(func(t *testing.T, data []byte, overPrior bool) {
		var prior []byte
		if overPrior {
			prior = []byte(recordJSONCases[1])
		}
		checkDecode(t, prior, data)
		// Whatever it is, a direct call must not panic, and must fail on
		// what is not valid JSON.
		var r Record
		if err := r.UnmarshalJSON(data); err == nil && !json.Valid(data) {
			t.Fatalf("%q: not valid JSON, but UnmarshalJSON accepted it", data)
		}
	})
}

func TestScanMatchesEncodingJSON(t *testing.T) {
	for _, c := range append(recordJSONCases, `1`, `-0.5e+7`, ` "x" `, `[[[]]]`, `{"a" : [ 1 , 2 ] }`, `tru`, `01`, `1.`, `.5`, `-`, `1e`, `"\ud800"`, `"\u12"`, "\"a\x00\"", ``, ` `) {
		checkScan(t, []byte(c))
	}
	deep := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	checkScan(t, []byte(deep))
	checkScan(t, []byte("["+deep+"]"))
}

func checkScan(t *testing.T, data []byte) {
	t.Helper()
	var want bytes.Buffer
	errWant := json.Compact(&want, data)
	got, ok := appendCompact([]byte("prefix"), data)
	if ok != (errWant == nil) {
		t.Fatalf("%.80q: appendCompact ok %v, json.Compact error %v", data, ok, errWant)
	}
	if ok && !bytes.Equal(got, append([]byte("prefix"), want.Bytes()...)) {
		t.Fatalf("%.80q: appendCompact %q, json.Compact %q", data, got, want.Bytes())
	}
	if ok != json.Valid(data) {
		t.Fatalf("%.80q: scan says valid %v, json.Valid %v", data, ok, json.Valid(data))
	}
}

func FuzzScan(f *testing.F) {
	for _, c := range recordJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkScan(t, data) })
}

type refChanges struct {
	Records    []refRecord `json:"records,omitempty"`
	Evicted    []Eviction  `json:"evicted,omitempty"`
	Checkpoint Checkpoint  `json:"checkpoint"`
}

var changesJSONCases = []string{
	`{"records":[` + recordJSONCases[0] + `,` + recordJSONCases[1] + `],"evicted":[{"coll":"cases","id":"c9","area":"Ondiep"}],"checkpoint":{"epoch":"e1","seq":42,"areas":["Zuilen"]}}`,
	`{"checkpoint":{"seq":1}}`,
	`{"records":[],"evicted":null,"RECORDS":[null,{"id":"x"}],"extra":[1,{"a":"b"}]}`,
	`{"records":null}`,
	`{"records":[{"id":"x"}],"records":[{"coll":"cases"},{"id":"y"}]}`,
	`null`,
	`{"records":{}}`,
	`{"records":[1]}`,
	`{"checkpoint":{"seq":"1"}}`,
	`{"evicted":[{"coll":5}]}`,
	`{"records":[{"id":"x"},]}`,
	`{"records":[{"id":"x"}]} x`,
}

func checkChanges(t *testing.T, data []byte) {
	t.Helper()
	var got Changes
	var want refChanges
	errGot, errWant := json.Unmarshal(data, &got), json.Unmarshal(data, &want)
	if (errGot == nil) != (errWant == nil) {
		t.Fatalf("%q: codec error %v, encoding/json error %v", data, errGot, errWant)
	}
	var direct Changes
	errDirect := direct.UnmarshalJSON(data)
	if errGot != nil {
		if errDirect == nil {
			t.Fatalf("%q: direct UnmarshalJSON accepted what json.Unmarshal refused (%v)", data, errGot)
		}
		return
	}
	w := Changes{Evicted: want.Evicted, Checkpoint: want.Checkpoint}
	if want.Records != nil {
		w.Records = make([]Record, len(want.Records))
		for i, r := range want.Records {
			w.Records[i] = fromRef(r)
		}
	}
	if !reflect.DeepEqual(got, w) {
		t.Fatalf("%q decodes to\n%#v\nencoding/json gives\n%#v", data, got, w)
	}
	if errDirect != nil || !reflect.DeepEqual(direct, got) {
		t.Fatalf("%q: direct UnmarshalJSON gives %#v, %v; json.Unmarshal %#v", data, direct, errDirect, got)
	}
	// And back: the encoding is encoding/json's, on the mirror types.
	enc, errEnc := got.appendJSON(nil)
	ref, errRef := Marshal(want)
	if (errEnc == nil) != (errRef == nil) || !bytes.Equal(enc, ref) {
		t.Fatalf("%q encodes to\n%s (%v)\nencoding/json gives\n%s (%v)", data, enc, errEnc, ref, errRef)
	}
}

func TestChangesJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range changesJSONCases {
		checkChanges(t, []byte(c))
	}
}

func FuzzChangesJSON(f *testing.F) {
	for _, c := range changesJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkChanges(t, data) })
}
