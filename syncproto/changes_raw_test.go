package syncproto_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/casesync/casesync/syncproto"
)

func rawTestRecords() []syncproto.Record {
	v := func(dev string, seq uint64, at syncproto.Stamp, data string) syncproto.Value {
		return syncproto.Value{Device: dev, Seq: seq, Stamp: at, Data: json.RawMessage(data)}
	}
	del := v("d2", 4, 9<<20, `true`)
	del.Covers = syncproto.Versions{"d1": 3, "d2": 4}
	return []syncproto.Record{
		{Collection: syncproto.Cases, ID: "c1", Area: "Zuilen & <Ondiep>", Fields: map[string]syncproto.Field{
			"title": {Values: []syncproto.Value{v("d1", 1, 5<<20, `"Mould \u003c & \u2028 \"x\"\n"`)}, Seen: syncproto.Versions{"d1": 1}},
			"tags":  {Values: []syncproto.Value{v("d1", 2, 6<<20, `["a","b"]`), v("d2", 1, 6<<20, `["c"]`)}, Seen: syncproto.Versions{"d1": 2, "d2": 1}},
		}},
		{Collection: syncproto.Entries, ID: "e1", Fields: map[string]syncproto.Field{
			"_deleted": {Values: []syncproto.Value{del}, Seen: syncproto.Versions{"d2": 4}},
			"text":     {Values: []syncproto.Value{v("d1", 3, 7<<20, `"é 日本"`)}, Seen: syncproto.Versions{"d1": 3}},
		}},
		{Collection: syncproto.Entries, ID: "e2", Area: "Zuilen", Fields: map[string]syncproto.Field{}},
	}
}

// TestChanges_Raw: records sent as stored JSON make the same frame, byte
// for byte, as the same records sent as values, and decode to them.
func TestChanges_Raw(t *testing.T) {
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	recs := rawTestRecords()
	raws := make([]json.RawMessage, len(recs))
	for i := range recs {
		if raws[i], err = syncproto.Marshal(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	cp := syncproto.Checkpoint{Epoch: "e", Seq: 9, Areas: []string{"Zuilen"}}
	ev := []syncproto.Eviction{{Collection: syncproto.Entries, ID: "e9", Area: "Ondiep"}}
	tests := map[string]struct{ plain, raw syncproto.Changes }{
		"OK":         {syncproto.Changes{Records: recs, Evicted: ev, Checkpoint: cp}, syncproto.Changes{Raw: raws, Evicted: ev, Checkpoint: cp}},
		"NoEvicted":  {syncproto.Changes{Records: recs, Checkpoint: cp}, syncproto.Changes{Raw: raws, Checkpoint: cp}},
		"Mixed":      {syncproto.Changes{Records: recs, Checkpoint: cp}, syncproto.Changes{Records: recs[:1], Raw: raws[1:], Checkpoint: cp}},
		"OneRaw":     {syncproto.Changes{Records: recs[2:], Checkpoint: cp}, syncproto.Changes{Raw: raws[2:], Checkpoint: cp}},
		"NoRecords":  {syncproto.Changes{Evicted: ev, Checkpoint: cp}, syncproto.Changes{Evicted: ev, Checkpoint: cp}},
		"EmptyRaw":   {syncproto.Changes{Checkpoint: cp}, syncproto.Changes{Raw: []json.RawMessage{}, Checkpoint: cp}},
		"Compressed": {syncproto.Changes{Records: recs, Evicted: ev, Checkpoint: cp}, syncproto.Changes{Raw: raws, Evicted: ev, Checkpoint: cp}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			z := name == "Compressed"
			want, err := codec.Encode(&tt.plain, z)
			if err != nil {
				t.Fatal(err)
			}
			got, err := codec.Encode(&tt.raw, z)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("raw frame differs:\n got %q\nwant %q", got, want)
			}
			m, err := codec.Decode(got, true)
			if err != nil {
				t.Fatal(err)
			}
			dec := m.(*syncproto.Changes)
			if len(dec.Raw) != 0 || !reflect.DeepEqual(dec.Records, tt.plain.Records) || !reflect.DeepEqual(dec.Evicted, tt.plain.Evicted) {
				t.Errorf("decoded %+v, want %+v", dec, tt.plain)
			}
			// encoding/json sees the same through MarshalJSON.
			js, err := syncproto.Marshal(&tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(js, got[syncproto.HeaderLen:]) && !z {
				t.Errorf("Marshal = %s, Encode's payload %s", js, got[syncproto.HeaderLen:])
			}
		})
	}
	t.Run("ErrEmptyRaw", func(t *testing.T) {
		if _, err := codec.Encode(&syncproto.Changes{Raw: []json.RawMessage{nil}, Checkpoint: cp}, false); err == nil {
			t.Error("Encode of an empty raw record succeeded")
		}
	})
}
