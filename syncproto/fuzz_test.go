package syncproto_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	sp "github.com/casesync/casesync/syncproto"
)

// Run one target at a time, for example:
//
//	go test ./syncproto -run '^$' -fuzz '^FuzzDecode$' -fuzztime 60s -parallel 1
//
// Seeds live in code (f.Add) and in testdata/fuzz/<FuzzName>/; the files
// made from the golden frames are rewritten by go test ./syncproto -run Golden -update.

// fuzzCodec is shared by all fuzz iterations: making a codec per input
// would measure zstd's setup, not the decoder.
var fuzzCodec = sync.OnceValue(func() *sp.Codec {
	c, err := sp.NewCodec(0)
	if err != nil {
		panic(err)
	}
	return c
})

// checkProtoErr fails unless err is an *Error of a known code.
func checkProtoErr(t *testing.T, what string, err error) {
	t.Helper()
	var e *sp.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s = %T %v, want an *Error", what, err, err)
	}
	if !e.Code.Known() {
		t.Fatalf("%s = %#v, want a known code", what, e)
	}
}

// checkFrame decodes frame and checks the decoder's contract: no panic, an
// error is an *Error with a known code, and a decoded message re-encodes
// (compressed and not) and decodes to an equal message. Messages are equal
// when their protocol encodings are: that ignores nil versus empty slices
// and whitespace inside raw values, which the protocol does not distinguish.
func checkFrame(t *testing.T, frame []byte, compressed bool) sp.Message {
	t.Helper()
	c := fuzzCodec()
	m, err := c.Decode(frame, compressed)
	if err != nil {
		if m != nil {
			t.Fatalf("Decode returned both %T and %v", m, err)
		}
		checkProtoErr(t, "Decode", err)
		return nil
	}
	if m == nil {
		t.Fatalf("Decode returned neither a message nor an error")
	}
	h, _ := sp.ParseHeader(frame)
	if m.Type() != h.Type {
		t.Fatalf("Decode of a type %d frame returned %s", h.Type, m.Type())
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("decoded %s does not validate: %v", m.Type(), err)
	}
	want, err := sp.Marshal(m)
	if err != nil {
		t.Fatalf("Marshal(decoded %s) = %v", m.Type(), err)
	}
	for _, compress := range []bool{false, true} {
		f2, err := c.Encode(m, compress)
		if err != nil {
			t.Fatalf("Encode(decoded %s, %v) = %v", m.Type(), compress, err)
		}
		m2, err := c.Decode(f2, compress)
		if err != nil {
			if (m.Type() == sp.TypeHello || m.Type() == sp.TypeWelcome) && len(want) > sp.MaxHelloPayload && errors.Is(err, sp.ErrFrameTooLarge) {
				// Re-encoding filled in defaults and pushed the handshake
				// over its limit: not a decoder fault.
				continue
			}
			t.Fatalf("Decode(Encode(decoded %s, %v)) = %v\nframe: %q", m.Type(), compress, err, f2)
		}
		if reflect.TypeOf(m2) != reflect.TypeOf(m) {
			t.Fatalf("round trip turned %T into %T", m, m2)
		}
		got, err := sp.Marshal(m2)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("round trip of %s changed it:\n got %s\nwant %s", m.Type(), got, want)
		}
	}
	return m
}

func goldenFrames(tb testing.TB) map[sp.Type][]byte {
	tb.Helper()
	out := map[sp.Type][]byte{}
	for _, m := range goldenMessages() {
		b, err := os.ReadFile(goldenFile(m))
		if err != nil {
			tb.Fatalf("read golden frame: %v", err)
		}
		out[m.Type()] = b
	}
	return out
}

// addGoldenPayloads seeds f with the golden payload of type t.
func addGoldenPayloads(f *testing.F, t sp.Type) {
	f.Helper()
	f.Add(goldenFrames(f)[t][sp.HeaderLen:])
}

func FuzzDecode(f *testing.F) {
	c := fuzzCodec()
	for _, m := range goldenMessages() {
		for _, compress := range []bool{false, true} {
			frame, err := c.Encode(m, compress)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(frame, compress)
		}
	}
	f.Add([]byte{}, false)
	f.Add([]byte{byte(sp.TypeAck), 0, 0, 0, 0, 9, '{', '"', 's', 'e', 'q', '"', ':', '1', '}'}, false)
	f.Add(rawFrame(sp.TypeAck, 0, 20, []byte(`{"seq":1}`)), false)
	f.Add(rawFrame(sp.TypePush, 0x02, 2, []byte(`{}`)), true)
	f.Add(rawFrame(sp.TypeChanges, sp.FlagZstd, 0xFFFFFFFF, []byte{0x28, 0xb5, 0x2f, 0xfd}), true)
	f.Add(rawFrame(sp.TypeChanges, sp.FlagZstd, 64, []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0x58, 1, 0, 0, 0}), true)
	f.Add(plainFrame(99, []byte(`{"future":1}`)), false)
	f.Add(plainFrame(sp.TypeError, []byte(`{"code":"future","message":"from v2"}`)), false)
	f.Fuzz(func(t *testing.T, frame []byte, compressed bool) {
		checkFrame(t, frame, compressed)
	})
}

// fuzzPayload wraps payload in an uncompressed frame of type typ and checks
// the decoder on it; a decoded message must be of the frame's type.
func fuzzPayload(t *testing.T, typ sp.Type, payload []byte) {
	t.Helper()
	if len(payload) > 1<<24 {
		return
	}
	m := checkFrame(t, plainFrame(typ, payload), false)
	if m != nil && reflect.TypeOf(m) == reflect.TypeOf(&sp.Unknown{}) {
		t.Fatalf("type %s decoded as Unknown", typ)
	}
}

func FuzzHello(f *testing.F) {
	addGoldenPayloads(f, sp.TypeHello)
	f.Add([]byte(`{"version":1,"device":"d"}`))
	f.Add([]byte(`{"version":99,"device":"d","checkpoint":{"epoch":"e","seq":18446744073709551615,"areas":["Zuilen"]},"compression":["zstd","br"],"live":true}`))
	f.Add([]byte(`{"version":1,"device":"d","checkpoint":{"areas":[" x"]}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeHello, payload) })
}

func FuzzWelcome(f *testing.F) {
	addGoldenPayloads(f, sp.TypeWelcome)
	f.Add([]byte(`{"version":1,"server_id":"s","epoch":"e","role":"lead","scope":{"all":true,"areas":[]},"limits":{"max_payload":1,"max_batch":1}}`))
	f.Add([]byte(`{"server_id":"s","epoch":"e","limits":{"max_payload":-1,"max_batch":1}}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeWelcome, payload) })
}

func FuzzError(f *testing.F) {
	addGoldenPayloads(f, sp.TypeError)
	f.Add([]byte(`{"code":"rate","message":"slow","retry_after_ms":1500}`))
	f.Add([]byte(`{"code":"future_code","reason":"x","message":"y","change":3,"field":"f"}`))
	f.Add([]byte(`{"code":""}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeError, payload) })
}

func FuzzPush(f *testing.F) {
	addGoldenPayloads(f, sp.TypePush)
	f.Add([]byte(`{"changes":[{"seq":1,"coll":"entries","id":"e1","at":"0000000000000001","fields":{"_deleted":{"val":true,"seen":{"d":1},"covers":{"d":2}}}}]}`))
	f.Add([]byte(`{"changes":[{"seq":1,"coll":"cases","id":"c1","at":"0000000000000001","fields":{"x":{"val":null}}},{"seq":1,"coll":"cases","id":"c1","at":"0000000000000001","fields":{"x":{"val":1}}}]}`))
	f.Add([]byte(`{"changes":[{"seq":1,"coll":"cases","id":"c1","at":"0000000000000001","fields":{"":{"val":1}}}]}`))
	f.Add([]byte(`{"changes":[]}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypePush, payload) })
}

func FuzzAck(f *testing.F) {
	addGoldenPayloads(f, sp.TypeAck)
	f.Add([]byte(`{"seq":0}`))
	f.Add([]byte(`{"accepted":[1,1,2],"rejected":[{"code":"scope","message":"","change":3}],"seq":5}`))
	f.Add([]byte(`{"rejected":[{"code":"validation","message":"x"}]}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeAck, payload) })
}

func FuzzChanges(f *testing.F) {
	addGoldenPayloads(f, sp.TypeChanges)
	f.Add([]byte(`{"checkpoint":{"seq":0}}`))
	f.Add([]byte(`{"records":[{"coll":"cases","id":"c1","fields":{"title":{"vals":[{"dev":"d1","seq":1,"at":"0000000000000001","val":"x"},{"dev":"d2","seq":1,"at":"0000000000000001","val":[1, 2]}],"seen":{"d1":1,"d2":4}}}}],"evicted":[{"coll":"entries","id":"e1"}],"checkpoint":{"epoch":"e","seq":9,"areas":["a"]}}`))
	f.Add([]byte(`{"records":[{"coll":"cases","id":"c1","area":"","fields":null}],"checkpoint":{"seq":1}}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeChanges, payload) })
}

func FuzzCaughtUp(f *testing.F) {
	addGoldenPayloads(f, sp.TypeCaughtUp)
	f.Add([]byte(`{"checkpoint":{"seq":0}}`))
	f.Add([]byte(`{"checkpoint":{"epoch":"","seq":1,"areas":[]}}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeCaughtUp, payload) })
}

func FuzzScope(f *testing.F) {
	addGoldenPayloads(f, sp.TypeScope)
	f.Add([]byte(`{"scope":{"all":true,"areas":["a","b"]}}`))
	f.Add([]byte(`{"scope":{"areas":null},"lost":["Zuilen","Zuilen"]}`))
	f.Fuzz(func(t *testing.T, payload []byte) { fuzzPayload(t, sp.TypeScope, payload) })
}

// fuzzExisting returns a small existing record for the change's key: a case,
// or an entry by the fuzzing actor.
func fuzzExisting(c *sp.Change) *sp.Record {
	if c.Collection == sp.Entries {
		f := mEntryFields(sp.KindReferral)
		f[sp.FieldFollowUp] = mw(`"2025-02-01"`)
		return mExisting(sp.Entries, c.ID, "dev-other", f)
	}
	f := mCaseFields()
	f[sp.FieldTags] = mw(`["a"]`)
	return mExisting(sp.Cases, c.ID, "dev-other", f)
}

func FuzzValidateChange(f *testing.F) {
	for _, m := range goldenMessages() {
		if p, ok := m.(*sp.Push); ok {
			for _, ch := range p.Changes {
				f.Add(marshalT(f, ch))
			}
		}
	}
	f.Add([]byte(`{"seq":7,"coll":"cases","id":"case-000001","at":"1943af321c000003","fields":{"title":{"val":"t"},"area":{"val":"Zuilen"},"status":{"val":"open"},"meta":{"val":{"b":1, "a":"<x>"}}}}`))
	f.Add([]byte(`{"seq":7,"coll":"entries","id":"entry-000001","at":"1943af321c000003","fields":{"case_id":{"val":"case-000001"},"kind":{"val":"referral"},"author":{"val":"anouk"},"occurred_at":{"val":"2025-01-06"},"text":{"val":"x"},"referred_to":{"val":"Loket"}}}`))
	f.Add([]byte(`{"seq":7,"coll":"entries","id":"entry-000001","at":"1943af321c000003","fields":{"_deleted":{"val":true,"seen":{"dev-anouk-1":6},"covers":{"dev-other":1}}}}`))
	f.Add([]byte(`{"seq":7,"coll":"cases","id":"case-000001","at":"1943af321c000003","fields":{"_deleted":{"val":true}}}`))
	f.Add([]byte(`{"seq":7,"coll":"entries","id":"e","at":"0000000000000001","fields":{"text":{"val":"\ud800 \u2028 <>&"}}}`))
	actor := sp.Actor{User: mUser, Device: mDevice}
	cases := mCaseIndex{mCase: "Zuilen"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var probe sp.Change
		if json.Unmarshal(data, &probe) != nil {
			return
		}
		for _, variant := range []struct {
			name  string
			cur   func(*sp.Change) *sp.Record
			cases sp.CaseIndex
		}{
			{"new", func(*sp.Change) *sp.Record { return nil }, cases},
			{"existing", fuzzExisting, cases},
			{"new without case index", func(*sp.Change) *sp.Record { return nil }, nil},
		} {
			var c sp.Change
			if err := json.Unmarshal(data, &c); err != nil {
				t.Fatalf("second Unmarshal of the same data = %v", err)
			}
			cur := variant.cur(&c)
			err := sp.ValidateChange(&c, cur, actor, variant.cases)
			if err != nil {
				checkProtoErr(t, "ValidateChange("+variant.name+")", err)
				continue
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("ValidateChange(%s) accepted a change that fails Change.Validate: %v", variant.name, err)
			}
			before := map[string]string{}
			for name, w := range c.Fields {
				canon, err := sp.Canonical(w.Data)
				if err != nil || !bytes.Equal(canon, w.Data) {
					t.Fatalf("ValidateChange(%s) left field %q = %s, Canonical = %s, %v", variant.name, name, w.Data, canon, err)
				}
				before[name] = string(w.Data)
			}
			// Validating again accepts and changes nothing.
			if err := sp.ValidateChange(&c, cur, actor, variant.cases); err != nil {
				t.Fatalf("ValidateChange(%s) accepted once, then = %v", variant.name, err)
			}
			for name, w := range c.Fields {
				if string(w.Data) != before[name] {
					t.Fatalf("second ValidateChange(%s) changed %q from %s to %s", variant.name, name, before[name], w.Data)
				}
			}
		}
	})
}

func FuzzStamp(f *testing.F) {
	f.Add([]byte(`"1943af321c000003"`))
	f.Add([]byte(`"ffffffffffffffff"`))
	f.Add([]byte(`"FFFFFFFFFFFFFFFF"`))
	f.Add([]byte(`"\u0031943af321c000003"`))
	f.Add([]byte(`null`))
	f.Add([]byte(`1943`))
	f.Add([]byte(`"1943af321c00000g"`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s sp.Stamp
		if err := s.UnmarshalJSON(data); err != nil {
			checkProtoErr(t, fmt.Sprintf("Stamp.UnmarshalJSON(%q)", data), err)
			if !errors.Is(err, sp.ErrMalformed) {
				t.Fatalf("Stamp.UnmarshalJSON(%q) = %v, want %v", data, err, sp.ErrMalformed)
			}
			return
		}
		// Only a JSON string of 16 hex digits is a stamp.
		var str string
		if err := json.Unmarshal(data, &str); err != nil || !strings.EqualFold(str, s.String()) {
			t.Fatalf("Stamp.UnmarshalJSON(%q) accepted %#x, which is not what the input spells", data, uint64(s))
		}
		b, err := s.MarshalJSON()
		if err != nil || len(b) != 18 || string(b) != `"`+s.String()+`"` || strings.ToLower(string(b)) != string(b) {
			t.Fatalf("Stamp(%#x).MarshalJSON() = %s, %v, want 16 lowercase hex digits in quotes", uint64(s), b, err)
		}
		var back sp.Stamp
		if err := back.UnmarshalJSON(b); err != nil || back != s {
			t.Fatalf("UnmarshalJSON(MarshalJSON(%#x)) = %#x, %v", uint64(s), uint64(back), err)
		}
	})
}

// goldenSeeds returns the seed corpus files made from the golden frames:
// target name → file name → file content in the go test fuzz v1 format.
func goldenSeeds(tb testing.TB) map[string]map[string]string {
	tb.Helper()
	c := testCodec(tb, 0)
	bytesArg := func(b []byte) string { return fmt.Sprintf("[]byte(%q)\n", b) }
	const header = "go test fuzz v1\n"
	out := map[string]map[string]string{}
	add := func(target, name, body string) {
		if out[target] == nil {
			out[target] = map[string]string{}
		}
		out[target][name] = header + body
	}
	targets := map[sp.Type]string{
		sp.TypeHello: "FuzzHello", sp.TypeWelcome: "FuzzWelcome", sp.TypeError: "FuzzError", sp.TypePush: "FuzzPush",
		sp.TypeAck: "FuzzAck", sp.TypeChanges: "FuzzChanges", sp.TypeCaughtUp: "FuzzCaughtUp", sp.TypeScope: "FuzzScope",
	}
	for typ, frame := range goldenFrames(tb) {
		name := "golden-" + typ.String()
		add("FuzzDecode", name, bytesArg(frame)+"bool(false)\n")
		add(targets[typ], name, bytesArg(frame[sp.HeaderLen:]))
	}
	for _, m := range goldenMessages() {
		if z, err := c.Encode(m, true); err == nil && z[1] == sp.FlagZstd {
			add("FuzzDecode", "golden-"+m.Type().String()+"-zstd", bytesArg(z)+"bool(true)\n")
		}
		if p, ok := m.(*sp.Push); ok {
			for _, ch := range p.Changes {
				add("FuzzValidateChange", fmt.Sprintf("golden-push-change-%d", ch.Seq), bytesArg(marshalT(tb, ch)))
				add("FuzzStamp", fmt.Sprintf("golden-stamp-%d", ch.Seq), bytesArg(marshalT(tb, ch.Stamp)))
			}
		}
	}
	return out
}

// TestGoldenFuzzSeeds keeps the committed seed corpus in step with the
// golden frames; -update rewrites it.
func TestGoldenFuzzSeeds(t *testing.T) {
	seeds := goldenSeeds(t)
	targets := make([]string, 0, len(seeds))
	for target := range seeds {
		targets = append(targets, target)
	}
	sort.Strings(targets)
	for _, target := range targets {
		dir := filepath.Join("testdata", "fuzz", target)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, want := range seeds[target] {
			path := filepath.Join(dir, name)
			if *update {
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("seed %s: %v (create it with go test ./syncproto -run Golden -update)", path, err)
				continue
			}
			if string(got) != want {
				t.Errorf("seed %s is out of date with the golden frames; rerun with -update", path)
			}
		}
	}
}
