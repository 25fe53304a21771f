package syncproto

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Mirrors of Push, Change and Write without methods: encoding/json's own
// decoding is the reference.

type refWrite struct {
	Data   json.RawMessage `json:"val"`
	Seen   Versions        `json:"seen,omitempty"`
	Covers Versions        `json:"covers,omitempty"`
}

type refChange struct {
	Seq        uint64              `json:"seq"`
	Collection Collection          `json:"coll"`
	ID         string              `json:"id"`
	Stamp      Stamp               `json:"at"`
	Fields     map[string]refWrite `json:"fields"`
}

type refPush struct {
	Changes []refChange `json:"changes"`
}

func fromRefChange(r refChange) Change {
	c := Change{Seq: r.Seq, Collection: r.Collection, ID: r.ID, Stamp: r.Stamp}
	if r.Fields != nil {
		c.Fields = make(map[string]Write, len(r.Fields))
		for k, w := range r.Fields {
			c.Fields[k] = Write(w)
		}
	}
	return c
}

var pushJSONCases = []string{
	`{"changes":[{"seq":7,"coll":"entries","id":"01HZENTRY","at":"0000018f2a3b4c5d","fields":{"text":{"val":"Visited <today> & more"},"case_id":{"val":"01HZCASE","seen":{"d1":3}},"_deleted":{"val":true,"covers":{"d1":6,"d2":1}}}}]}`,
	`{"changes":[{"seq":1,"coll":"cases","id":"c","at":"0000000000000001","fields":{"tags":{"val": [ "a" , 1 ] ,"seen":{}}}},{"seq":2}]}`,
	`{"changes":null}`,
	`{"changes":[]}`,
	`{"CHANGES":[null,{"SEQ":3,"Fields":{"f":null}}],"other":{"x":[1]}}`,
	"{\"changes\":[{\"\u017feq\":4,\"fields\":{\"f\":{\"\u017feen\":{\"a\":1}}}}]}",
	`{"changes":[{"id":"a","id":"b","fields":{"f":{"seen":{"a":1}}},"fields":{"g":{"val":1}}}]}`,
	`{"changes":[{"fields":{"f":{"seen":{"a":1},"seen":{"b":2},"val":1,"val":2}}}]}`,
	`{"changes":[{"seq":1}],"changes":[{"id":"x"},{"seq":2}]}`,
	`{"changes":[{"id":"\u00e9\n","coll":"c\"s","fields":{"n\u0061me":{"val":"x"}}}]}`,
	"{\"changes\":[{\"id\":\"\xff\",\"fields\":{\"\xfe\":{\"val\":\"\xfd\"}}}]}",
	`null`,
	// Errors for both.
	`{"changes":[{"seq":-1}]}`,
	`{"changes":[{"seq":"1"}]}`,
	`{"changes":[{"seq":1e3}]}`,
	`{"changes":[{"at":null}]}`,
	`{"changes":[{"at":"xyz"}]}`,
	`{"changes":{}}`,
	`{"changes":[1]}`,
	`{"changes":[{"fields":[]}]}`,
	`{"changes":[{"fields":{"f":1}}]}`,
	`{"changes":[{"fields":{"f":{"seen":{"a":-1}}}}]}`,
	`{"changes":[{"fields":{"f":{"covers":[]}}}]}`,
	`[]`,
	`{"changes":[]`,
	`{"changes":[]} {}`,
	`{"changes":[{"fields":{"f":{"val":tru}}}]}`,
}

func checkPush(t *testing.T, data []byte) {
	t.Helper()
	var got Push
	var want refPush
	errGot, errWant := json.Unmarshal(data, &got), json.Unmarshal(data, &want)
	if (errGot == nil) != (errWant == nil) {
		t.Fatalf("%q: codec error %v, encoding/json error %v", data, errGot, errWant)
	}
	var direct Push
	errDirect := direct.UnmarshalJSON(data)
	if errGot != nil {
		if errDirect == nil {
			t.Fatalf("%q: direct UnmarshalJSON accepted what json.Unmarshal refused (%v)", data, errGot)
		}
		return
	}
	var w Push
	if want.Changes != nil {
		w.Changes = make([]Change, len(want.Changes))
		for i, c := range want.Changes {
			w.Changes[i] = fromRefChange(c)
		}
	}
	if !reflect.DeepEqual(got, w) {
		t.Fatalf("%q decodes to\n%#v\nencoding/json gives\n%#v", data, got, w)
	}
	if errDirect != nil || !reflect.DeepEqual(direct, got) {
		t.Fatalf("%q: direct UnmarshalJSON gives %#v, %v; json.Unmarshal %#v", data, direct, errDirect, got)
	}
}

func TestPushJSONMatchesEncodingJSON(t *testing.T) {
	for _, c := range pushJSONCases {
		checkPush(t, []byte(c))
	}
	// A change decoded over one that holds something already.
	var got Change
	var want refChange
	prior := `{"seq":9,"coll":"cases","id":"p","at":"0000000000000009","fields":{"f":{"val":1,"seen":{"a":1}}}}`
	next := `{"seq":null,"fields":{"g":{"val":2}}}`
	for _, s := range []string{prior, next} {
		if err := json.Unmarshal([]byte(s), &got); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatal(err)
		}
	}
	if w := fromRefChange(want); !reflect.DeepEqual(got, w) {
		t.Fatalf("decoding over a change: %#v, encoding/json %#v", got, w)
	}
}

func FuzzPushJSON(f *testing.F) {
	for _, c := range pushJSONCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkPush(t, data) })
}
