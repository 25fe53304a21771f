package syncproto_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	sp "github.com/casesync/casesync/syncproto"
)

// update rewrites the golden frames (and the fuzz seeds made from them):
//
//	go test ./syncproto -run Golden -update
//
// Golden frames of a released protocol version are never regenerated.
var update = flag.Bool("update", false, "rewrite syncproto/testdata golden frames and fuzz seeds")

// goldenDir holds the canonical frames of protocol version 1.
var goldenDir = filepath.Join("testdata", "golden", "v1")

// Fixed inputs of the golden messages: nothing in them depends on the time
// or on randomness, so the frames are byte-for-byte reproducible.
var (
	goldenTime = time.Date(2025, time.January, 6, 9, 30, 0, 0, time.UTC)
	// goldenStamp is an HLC reading with a non-zero logical counter.
	goldenStamp = sp.MakeStamp(goldenTime) | 3
	goldenCase  = "01JGZ8Q4MX3V7K2D9R5T6W8YAB"
	goldenEntry = "01JGZ8Q4MX3V7K2D9R5T6W8YAC"
	goldenDevA  = "01JGZ7ZZ0000DEVICEAAAAAAAA"
	goldenDevB  = "laptop-zuilen-02"
)

// goldenMessages returns one fully populated message of every type, in type
// order. Empty slices and maps are nil so that a decoded copy is
// reflect.DeepEqual to the original.
func goldenMessages() []sp.Message {
	cp := sp.Checkpoint{Epoch: "01JGZ6EPOCH0000000000000AA", Seq: 1207, Areas: []string{"Lombok-Oost", "Zuilen"}}
	return []sp.Message{
		&sp.Hello{
			Version:     sp.Version,
			Device:      goldenDevA,
			Checkpoint:  cp,
			Compression: []string{sp.CompressionZstd},
			Time:        goldenTime.UnixMilli(),
			Live:        true,
			Agent:       "casesync/1.0.0 (linux; amd64)",
		},
		&sp.Welcome{
			Version:     sp.Version,
			ServerID:    "casesyncd-utrecht-1",
			Epoch:       cp.Epoch,
			User:        "anouk",
			Role:        sp.RoleCaseworker,
			Scope:       sp.Scope{Areas: []string{"Lombok-Oost", "Zuilen"}},
			Limits:      sp.Limits{MaxPayload: 4 << 20, MaxBatch: 500, MaxRecord: sp.MaxRecord, MaxText: sp.MaxText, Rate: 50},
			Compression: sp.CompressionZstd,
			Time:        goldenTime.UnixMilli() + 1500,
			Seq:         1311,
		},
		&sp.Error{
			Code:    sp.CodeVersion,
			Reason:  "too_old",
			Message: "protocol version 0 is too old; this server accepts 1 to 1: upgrade the client",
		},
		&sp.Push{Changes: []sp.Change{
			{
				Seq: 17, Collection: sp.Cases, ID: goldenCase, Stamp: goldenStamp,
				Fields: map[string]sp.Write{
					sp.FieldTitle:      {Data: json.RawMessage(`"Damp in the bedroom <urgent> & mould"`)},
					sp.FieldArea:       {Data: json.RawMessage(`"Zuilen"`)},
					sp.FieldStatus:     {Data: json.RawMessage(`"open"`)},
					sp.FieldTenant:     {Data: json.RawMessage(`"Mevr. Bakker"`)},
					sp.FieldTags:       {Data: json.RawMessage(`["mould","landlord"]`)},
					sp.FieldNextAction: {Data: json.RawMessage(`"2025-01-13"`)},
					"landlord_ref":     {Data: json.RawMessage(`{"corp":"Mitros","no":4411}`)},
				},
			},
			{
				Seq: 18, Collection: sp.Entries, ID: goldenEntry, Stamp: goldenStamp + 1,
				Fields: map[string]sp.Write{
					sp.FieldText: {Data: json.RawMessage(`"Visited; landlord agreed to send a contractor."`), Seen: sp.Versions{goldenDevA: 12, goldenDevB: 4}},
				},
			},
			{
				Seq: 19, Collection: sp.Entries, ID: "entry-000042", Stamp: goldenStamp + 2,
				Fields: map[string]sp.Write{
					sp.FieldDeleted: {Data: json.RawMessage(`true`), Seen: sp.Versions{goldenDevB: 2}, Covers: sp.Versions{goldenDevA: 9, goldenDevB: 7}},
				},
			},
		}},
		&sp.Ack{
			Accepted: []uint64{17, 18},
			Rejected: []sp.Error{
				{Code: sp.CodeValidation, Reason: "not_author", Message: "only the author may edit an entry", Change: 19, Field: sp.FieldAuthor},
				{Code: sp.CodeRate, Message: "slow down", Change: 20, RetryAfterMS: 1500},
			},
			Seq: 1313,
		},
		&sp.Changes{
			Records: []sp.Record{
				{
					Collection: sp.Cases, ID: goldenCase, Area: "Zuilen",
					Fields: map[string]sp.Field{
						sp.FieldTitle: {
							Values: []sp.Value{{Device: goldenDevA, Seq: 17, Stamp: goldenStamp, Data: json.RawMessage(`"Damp in the bedroom"`)}},
							Seen:   sp.Versions{goldenDevA: 17},
						},
						sp.FieldStatus: {
							Values: []sp.Value{
								{Device: goldenDevB, Seq: 5, Stamp: goldenStamp + 9, Data: json.RawMessage(`"waiting"`)},
								{Device: goldenDevA, Seq: 21, Stamp: goldenStamp + 8, Data: json.RawMessage(`"closed"`)},
							},
							Seen: sp.Versions{goldenDevA: 21, goldenDevB: 5},
						},
					},
				},
				{
					Collection: sp.Entries, ID: "entry-000042", Area: "Zuilen",
					Fields: map[string]sp.Field{
						sp.FieldDeleted: {
							Values: []sp.Value{{Device: goldenDevB, Seq: 8, Stamp: goldenStamp + 2, Data: json.RawMessage(`true`), Covers: sp.Versions{goldenDevA: 9, goldenDevB: 7}}},
							Seen:   sp.Versions{goldenDevB: 8},
						},
					},
				},
			},
			Evicted:    []sp.Eviction{{Collection: sp.Cases, ID: "case-000007", Area: "Overvecht"}},
			Checkpoint: sp.Checkpoint{Epoch: cp.Epoch, Seq: 1313, Areas: []string{"Lombok-Oost", "Zuilen"}},
		},
		&sp.CaughtUp{Checkpoint: sp.Checkpoint{Epoch: cp.Epoch, Seq: 1313, Areas: []string{"Lombok-Oost", "Zuilen"}}},
		&sp.ScopeUpdate{Scope: sp.Scope{Areas: []string{"Zuilen", "Kanaleneiland"}}, Lost: []string{"Lombok-Oost"}},
	}
}

// newCodec returns a codec with the given payload limit (0: protocol max)
// that is closed when the test ends.
func testCodec(tb testing.TB, maxPayload int) *sp.Codec {
	tb.Helper()
	c, err := sp.NewCodec(maxPayload)
	if err != nil {
		tb.Fatalf("NewCodec(%d) = %v", maxPayload, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// rawFrame builds a frame by hand: header fields as given, payload as is.
func rawFrame(t sp.Type, flags uint8, length uint32, payload []byte) []byte {
	f := make([]byte, sp.HeaderLen, sp.HeaderLen+len(payload))
	f[0] = byte(t)
	f[1] = flags
	binary.BigEndian.PutUint32(f[2:], length)
	return append(f, payload...)
}

// plainFrame is an uncompressed frame of payload with a correct header.
func plainFrame(t sp.Type, payload []byte) []byte {
	return rawFrame(t, 0, uint32(len(payload)), payload)
}

func marshalT(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := sp.Marshal(v)
	if err != nil {
		tb.Fatalf("Marshal(%T) = %v", v, err)
	}
	return b
}

func zstdAll(tb testing.TB, b []byte) []byte {
	tb.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		tb.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// wantErr fails unless err is an *sp.Error with a known code that matches
// want with errors.Is.
func wantProtoErr(tb testing.TB, what string, err error, want *sp.Error) {
	tb.Helper()
	if !errors.Is(err, want) {
		tb.Fatalf("%s = %v, want %v", what, err, want)
	}
	var e *sp.Error
	if !errors.As(err, &e) || !e.Code.Known() {
		tb.Fatalf("%s = %#v, want an *Error with a known code", what, err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	c := testCodec(t, 0)
	msgs := append(goldenMessages(), &sp.Unknown{T: 42})
	for _, m := range msgs {
		for _, compress := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/compress=%v", m.Type(), compress), func(t *testing.T) {
				frame, err := c.Encode(m, compress)
				if err != nil {
					t.Fatalf("Encode(%s, %v) = %v", m.Type(), compress, err)
				}
				h, err := sp.ParseHeader(frame)
				if err != nil {
					t.Fatalf("ParseHeader = %v", err)
				}
				if h.Type != m.Type() {
					t.Errorf("header type = %v, want %v", h.Type, m.Type())
				}
				payload := marshalT(t, m)
				if int(h.Length) != len(payload) {
					t.Errorf("header length = %d, want the JSON length %d", h.Length, len(payload))
				}
				wantFlags := uint8(0)
				if compress && len(payload) >= 256 && m.Type() != sp.TypeHello && m.Type() != sp.TypeWelcome {
					wantFlags = sp.FlagZstd
				}
				if h.Flags != wantFlags {
					t.Errorf("header flags = %#x, want %#x (payload %d bytes)", h.Flags, wantFlags, len(payload))
				}
				got, err := c.Decode(frame, compress)
				if err != nil {
					t.Fatalf("Decode(Encode(%s)) = %v", m.Type(), err)
				}
				if !reflect.DeepEqual(got, m) {
					t.Errorf("Decode(Encode(m)) = %#v, want %#v", got, m)
				}
			})
		}
	}
}

// TestCompressedRoundTripLarge makes sure payloads that do get compressed
// come back intact (the golden messages may be near the threshold).
func TestCompressedRoundTripLarge(t *testing.T) {
	c := testCodec(t, 0)
	p := &sp.Push{}
	for i := 1; i <= 200; i++ {
		p.Changes = append(p.Changes, sp.Change{
			Seq: uint64(i), Collection: sp.Entries, ID: fmt.Sprintf("entry-%06d", i), Stamp: goldenStamp + sp.Stamp(i),
			Fields: map[string]sp.Write{sp.FieldText: {Data: json.RawMessage(`"` + strings.Repeat("note ", 50) + `"`)}},
		})
	}
	frame, err := c.Encode(p, true)
	if err != nil {
		t.Fatalf("Encode = %v", err)
	}
	if frame[1] != sp.FlagZstd {
		t.Fatalf("flags = %#x, want FlagZstd", frame[1])
	}
	if plain := marshalT(t, p); len(frame) >= len(plain)/4 {
		t.Errorf("compressed frame is %d bytes for a %d-byte repetitive payload; compression is not applied", len(frame), len(plain))
	}
	got, err := c.Decode(frame, true)
	if err != nil {
		t.Fatalf("Decode = %v", err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Errorf("Decode(Encode(push)) differs from the push")
	}
}

func TestEncodeTooLarge(t *testing.T) {
	c := testCodec(t, 1024)
	if got := c.MaxPayload(); got != 1024 {
		t.Errorf("MaxPayload() = %d, want 1024", got)
	}
	e := &sp.Error{Code: sp.CodeInternal, Message: strings.Repeat("x", 2000)}
	_, err := c.Encode(e, false)
	wantProtoErr(t, "Encode(2000-byte error) with limit 1024", err, sp.ErrFrameTooLarge)
	if c.MaxFrame() < sp.HeaderLen+1024 {
		t.Errorf("MaxFrame() = %d, want at least header + limit = %d", c.MaxFrame(), sp.HeaderLen+1024)
	}
}

func TestNewCodecLimit(t *testing.T) {
	for _, in := range []int{0, -1, sp.MaxPayload + 1} {
		if got := testCodec(t, in).MaxPayload(); got != sp.MaxPayload {
			t.Errorf("NewCodec(%d).MaxPayload() = %d, want %d", in, got, sp.MaxPayload)
		}
	}
}

func goldenFile(m sp.Message) string { return filepath.Join(goldenDir, m.Type().String()+".bin") }

func TestGolden(t *testing.T) {
	c := testCodec(t, 0)
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range goldenMessages() {
		t.Run(m.Type().String(), func(t *testing.T) {
			frame, err := c.Encode(m, false)
			if err != nil {
				t.Fatalf("Encode(%s) = %v", m.Type(), err)
			}
			// Encoding twice must give the same bytes: map order must not leak.
			for range 5 {
				again, _ := c.Encode(m, false)
				if !bytes.Equal(again, frame) {
					t.Fatalf("Encode(%s) is not deterministic", m.Type())
				}
			}
			path := goldenFile(m)
			if *update {
				if err := os.WriteFile(path, frame, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden frame: %v (create it with go test ./syncproto -run Golden -update)", err)
			}
			if !bytes.Equal(frame, want) {
				t.Errorf("Encode(%s) =\n%q\nwant golden %s\n%q", m.Type(), frame, path, want)
			}
			// The stored frame must still decode to the message: old frames
			// of this version stay readable.
			got, err := c.Decode(want, false)
			if err != nil {
				t.Fatalf("Decode(golden %s) = %v", path, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("Decode(golden %s) = %#v, want %#v", path, got, m)
			}
		})
	}
}

// TestGoldenFilesComplete fails if a golden frame exists for no message type,
// so that removed or renamed messages are noticed.
func TestGoldenFilesComplete(t *testing.T) {
	want := map[string]bool{}
	for _, m := range goldenMessages() {
		want[filepath.Base(goldenFile(m))] = true
	}
	entries, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !want[e.Name()] {
			t.Errorf("golden file %s matches no message type", e.Name())
		}
		delete(want, e.Name())
	}
	for name := range want {
		t.Errorf("golden file %s is missing", name)
	}
}

// paddedJSON returns a JSON object of exactly n bytes: obj (which must end
// in '}') with spaces inserted before its closing brace.
func paddedJSON(tb testing.TB, obj string, n int) []byte {
	tb.Helper()
	if len(obj) > n || !strings.HasSuffix(obj, "}") {
		tb.Fatalf("paddedJSON(%q, %d): object too long", obj, n)
	}
	return []byte(obj[:len(obj)-1] + strings.Repeat(" ", n-len(obj)) + "}")
}

func TestDecodeBadInput(t *testing.T) {
	c := testCodec(t, 0)
	small := testCodec(t, 1024)

	pushOf := func(changes ...sp.Change) *sp.Push { return &sp.Push{Changes: changes} }
	ch := func(seq uint64) sp.Change {
		return sp.Change{Seq: seq, Collection: sp.Cases, ID: goldenCase, Stamp: goldenStamp,
			Fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"closed"`)}}}
	}
	encode := func(m sp.Message, compress bool) []byte {
		f, err := c.Encode(m, compress)
		if err != nil {
			t.Fatalf("Encode(%s) = %v", m.Type(), err)
		}
		return f
	}
	bigPush := &sp.Push{}
	for i := 1; i <= 20; i++ {
		bigPush.Changes = append(bigPush.Changes, ch(uint64(i)))
	}
	bigPayload := marshalT(t, bigPush)
	bigZ := zstdAll(t, bigPayload)
	tooMany := &sp.Push{}
	for i := 1; i <= sp.MaxBatch+1; i++ {
		tooMany.Changes = append(tooMany.Changes, ch(uint64(i)))
	}
	hello := `{"version":1,"device":"dev1","checkpoint":{"seq":0},"time":0}`
	welcome := `{"version":1,"server_id":"s","epoch":"e","scope":{"areas":[]},"limits":{"max_payload":1,"max_batch":1},"time":0,"seq":0}`

	tests := []struct {
		name       string
		codec      *sp.Codec
		frame      []byte
		compressed bool
		want       *sp.Error
	}{
		{"empty frame", c, nil, false, sp.ErrMalformed},
		{"truncated header", c, []byte{byte(sp.TypePush), 0, 0, 0}, false, sp.ErrMalformed},
		{"header only, five bytes", c, []byte{byte(sp.TypeAck), 0, 0, 0, 0}, false, sp.ErrMalformed},
		{"header only, zero length", c, rawFrame(sp.TypeAck, 0, 0, nil), false, sp.ErrMalformed},
		{"payload shorter than declared", c, rawFrame(sp.TypeAck, 0, 20, []byte(`{"seq":1}`)), false, sp.ErrMalformed},
		{"payload longer than declared", c, rawFrame(sp.TypeAck, 0, 3, []byte(`{"seq":1}`)), false, sp.ErrMalformed},
		{"unknown flag bit 1", c, rawFrame(sp.TypeAck, 0x02, 9, []byte(`{"seq":1}`)), true, sp.ErrCompression},
		{"unknown flag bit 7 with zstd", c, rawFrame(sp.TypePush, 0x81, uint32(len(bigPayload)), bigZ), true, sp.ErrCompression},
		{"unknown flags on unknown type", c, rawFrame(200, 0x10, 2, []byte(`{}`)), false, sp.ErrCompression},
		{"compressed frame before negotiation", c, encode(bigPush, true), false, sp.ErrCompression},
		{"compressed unknown type before negotiation", c, rawFrame(200, sp.FlagZstd, uint32(len(bigPayload)), bigZ), false, sp.ErrCompression},
		{"declared length over codec limit", small, rawFrame(sp.TypeAck, 0, 1025, paddedJSON(t, `{"seq":1}`, 1025)), false, sp.ErrFrameTooLarge},
		{"declared length over limit, body absent", c, rawFrame(sp.TypeChanges, 0, sp.MaxPayload+1, nil), false, sp.ErrFrameTooLarge},
		{"declared length 4 GiB, compressed", c, rawFrame(sp.TypeChanges, sp.FlagZstd, 0xFFFFFFFF, bigZ), true, sp.ErrFrameTooLarge},
		{"compressed payload shorter than declared", c, rawFrame(sp.TypePush, sp.FlagZstd, uint32(len(bigPayload)+1), bigZ), true, sp.ErrMalformed},
		{"compressed payload longer than declared", c, rawFrame(sp.TypePush, sp.FlagZstd, uint32(len(bigPayload)-1), bigZ), true, sp.ErrFrameTooLarge},
		{"compressed payload declared empty", c, rawFrame(sp.TypePush, sp.FlagZstd, 0, bigZ), true, sp.ErrFrameTooLarge},
		{"not zstd", c, rawFrame(sp.TypePush, sp.FlagZstd, uint32(len(bigPayload)), bigPayload), true, sp.ErrMalformed},
		{"truncated zstd", c, rawFrame(sp.TypePush, sp.FlagZstd, uint32(len(bigPayload)), bigZ[:len(bigZ)/2]), true, sp.ErrMalformed},
		{"compressed hello", c, rawFrame(sp.TypeHello, sp.FlagZstd, uint32(len(hello)), zstdAll(t, []byte(hello))), true, sp.ErrCompression},
		{"compressed welcome", c, rawFrame(sp.TypeWelcome, sp.FlagZstd, uint32(len(welcome)), zstdAll(t, []byte(welcome))), true, sp.ErrCompression},
		{"invalid JSON", c, plainFrame(sp.TypePush, []byte(`{"changes":[`)), false, sp.ErrMalformed},
		{"JSON array instead of object", c, plainFrame(sp.TypeAck, []byte(`[1,2]`)), false, sp.ErrMalformed},
		{"JSON null instead of object", c, plainFrame(sp.TypeAck, []byte(`null`)), false, sp.ErrMalformed},
		{"JSON string instead of object", c, plainFrame(sp.TypeCaughtUp, []byte(` "x"`)), false, sp.ErrMalformed},
		{"whitespace only", c, plainFrame(sp.TypeCaughtUp, []byte(" \n")), false, sp.ErrMalformed},
		{"JSON field of wrong type", c, plainFrame(sp.TypeAck, []byte(`{"seq":"12"}`)), false, sp.ErrMalformed},
		{"negative seq", c, plainFrame(sp.TypeAck, []byte(`{"seq":-1}`)), false, sp.ErrMalformed},
		{"trailing data after JSON", c, plainFrame(sp.TypeAck, []byte(`{"seq":1}{}`)), false, sp.ErrMalformed},
		{"bad stamp in push", c, plainFrame(sp.TypePush, []byte(`{"changes":[{"seq":1,"coll":"cases","id":"c1","at":"xyz","fields":{"status":{"val":"open"}}}]}`)), false, sp.ErrMalformed},
		{"hello over 64 KiB", c, plainFrame(sp.TypeHello, paddedJSON(t, hello, sp.MaxHelloPayload+1)), false, sp.ErrFrameTooLarge},
		{"welcome over 64 KiB", c, plainFrame(sp.TypeWelcome, paddedJSON(t, welcome, sp.MaxHelloPayload+1)), false, sp.ErrFrameTooLarge},
		{"hello without device", c, plainFrame(sp.TypeHello, []byte(`{"version":1,"time":0}`)), false, sp.ErrMalformed},
		{"hello with bad checkpoint area", c, plainFrame(sp.TypeHello, []byte(`{"version":1,"device":"d1","checkpoint":{"seq":1,"areas":["a,b"]}}`)), false, sp.ErrMalformed},
		{"hello with 9 compressions", c, plainFrame(sp.TypeHello, []byte(`{"version":1,"device":"d1","compression":["a","b","c","d","e","f","g","h","i"]}`)), false, sp.ErrMalformed},
		{"hello agent over 128 bytes", c, plainFrame(sp.TypeHello, []byte(`{"version":1,"device":"d1","agent":"`+strings.Repeat("a", 129)+`"}`)), false, sp.ErrMalformed},
		{"hello checkpoint epoch over 64 bytes", c, plainFrame(sp.TypeHello, []byte(`{"version":1,"device":"d1","checkpoint":{"epoch":"`+strings.Repeat("e", sp.MaxIDLen+1)+`","seq":1}}`)), false, sp.ErrMalformed},
		{"welcome epoch over 64 bytes", c, plainFrame(sp.TypeWelcome, []byte(`{"version":1,"server_id":"s","epoch":"`+strings.Repeat("e", sp.MaxIDLen+1)+`","limits":{"max_payload":1,"max_batch":1}}`)), false, sp.ErrMalformed},
		{"welcome scope with 1001 areas", c, plainFrame(sp.TypeWelcome, []byte(`{"version":1,"server_id":"s","epoch":"e","scope":{"areas":[`+strings.TrimSuffix(strings.Repeat(`"a",`, sp.MaxAreas+1), ",")+`]},"limits":{"max_payload":1,"max_batch":1}}`)), false, sp.ErrMalformed},
		{"welcome without epoch", c, plainFrame(sp.TypeWelcome, []byte(`{"version":1,"server_id":"s","limits":{"max_payload":1,"max_batch":1}}`)), false, sp.ErrMalformed},
		{"welcome with zero limits", c, plainFrame(sp.TypeWelcome, []byte(`{"version":1,"server_id":"s","epoch":"e"}`)), false, sp.ErrMalformed},
		{"error without code", c, plainFrame(sp.TypeError, []byte(`{"message":"x"}`)), false, sp.ErrMalformed},
		{"error code over 32 bytes", c, plainFrame(sp.TypeError, []byte(`{"code":"`+strings.Repeat("c", 33)+`","message":"x"}`)), false, sp.ErrMalformed},
		{"error reason over 64 bytes", c, plainFrame(sp.TypeError, []byte(`{"code":"internal","reason":"`+strings.Repeat("r", 65)+`","message":"x"}`)), false, sp.ErrMalformed},
		{"error message over limit", c, plainFrame(sp.TypeError, []byte(`{"code":"internal","message":"`+strings.Repeat("x", sp.MaxMessage+1)+`"}`)), false, sp.ErrMalformed},
		{"empty push", c, plainFrame(sp.TypePush, []byte(`{"changes":[]}`)), false, sp.ErrMalformed},
		{"push with too many changes", c, encode(tooMany, false), false, sp.ErrBatchTooLarge},
		{"push with duplicate seqs", c, encode(pushOf(ch(1), ch(2), ch(1)), false), false, sp.ErrBadChange},
		{"push with seq 0", c, encode(pushOf(ch(0)), false), false, sp.ErrBadChange},
		{"ack rejection without change", c, plainFrame(sp.TypeAck, []byte(`{"rejected":[{"code":"validation","message":"x"}],"seq":1}`)), false, sp.ErrMalformed},
		{"changes record value outside its context", c, plainFrame(sp.TypeChanges, []byte(`{"records":[{"coll":"cases","id":"c1","fields":{"title":{"vals":[{"dev":"d1","seq":5,"at":"0000000000000001","val":"x"}],"seen":{"d1":4}}}}],"checkpoint":{"seq":1}}`)), false, sp.ErrMalformed},
		{"changes record with a bad device in seen", c, plainFrame(sp.TypeChanges, []byte(`{"records":[{"coll":"cases","id":"c1","fields":{"title":{"vals":[],"seen":{"bad device":4}}}}],"checkpoint":{"seq":1}}`)), false, sp.ErrBadID},
		{"changes record with a bad device in covers", c, plainFrame(sp.TypeChanges, []byte(`{"records":[{"coll":"entries","id":"e1","fields":{"_deleted":{"vals":[{"dev":"d1","seq":5,"at":"0000000000000001","val":true,"covers":{"bad device":1}}],"seen":{"d1":5}}}}],"checkpoint":{"seq":1}}`)), false, sp.ErrBadID},
		{"changes record with a bad area", c, plainFrame(sp.TypeChanges, []byte(`{"records":[{"coll":"cases","id":"c1","area":"a,b","fields":{}}],"checkpoint":{"seq":1}}`)), false, sp.ErrMalformed},
		{"changes record over 64 fields", c, plainFrame(sp.TypeChanges, manyFieldsRecord(sp.MaxFields+1)), false, sp.ErrRecordTooLarge},
		{"changes eviction of unknown collection", c, plainFrame(sp.TypeChanges, []byte(`{"evicted":[{"coll":"notes","id":"n1"}],"checkpoint":{"seq":1}}`)), false, sp.ErrMalformed},
		{"caught_up with bad area", c, plainFrame(sp.TypeCaughtUp, []byte(`{"checkpoint":{"seq":1,"areas":[""]}}`)), false, sp.ErrMalformed},
		{"scope with bad lost area", c, plainFrame(sp.TypeScope, []byte(`{"scope":{"areas":["Zuilen"]},"lost":["*"]}`)), false, sp.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.codec.Decode(tt.frame, tt.compressed)
			wantProtoErr(t, fmt.Sprintf("Decode(%s)", tt.name), err, tt.want)
			if m != nil {
				t.Errorf("Decode(%s) returned message %#v with its error, want nil", tt.name, m)
			}
		})
	}
}

// manyFieldsRecord is a changes payload holding one case with n fields.
func manyFieldsRecord(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"records":[{"coll":"cases","id":"c1","fields":{`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"f%d":{"vals":[],"seen":{}}`, i)
	}
	b.WriteString(`}}],"checkpoint":{"seq":1}}`)
	return []byte(b.String())
}

// TestDecodeLimitsBoundary checks that the limits are inclusive: a payload of
// exactly the limit decodes.
func TestDecodeLimitsBoundary(t *testing.T) {
	c := testCodec(t, 0)
	hello := paddedJSON(t, `{"version":1,"device":"dev1","checkpoint":{"seq":0},"time":0}`, sp.MaxHelloPayload)
	if _, err := c.Decode(plainFrame(sp.TypeHello, hello), false); err != nil {
		t.Errorf("Decode(hello of exactly %d bytes) = %v, want nil", sp.MaxHelloPayload, err)
	}
	small := testCodec(t, 1024)
	ack := paddedJSON(t, `{"seq":1}`, 1024)
	if _, err := small.Decode(plainFrame(sp.TypeAck, ack), false); err != nil {
		t.Errorf("Decode(ack of exactly the 1024-byte limit) = %v, want nil", err)
	}
	// A codec limit below 64 KiB also bounds hello.
	_, err := small.Decode(plainFrame(sp.TypeHello, paddedJSON(t, `{"version":1,"device":"dev1"}`, 1025)), false)
	wantProtoErr(t, "Decode(1025-byte hello) with limit 1024", err, sp.ErrFrameTooLarge)

	if _, err := c.Decode(plainFrame(sp.TypeChanges, manyFieldsRecord(sp.MaxFields)), false); err != nil {
		t.Errorf("Decode(changes with a %d-field record) = %v, want nil", sp.MaxFields, err)
	}

	p := &sp.Push{}
	for i := 1; i <= sp.MaxBatch; i++ {
		p.Changes = append(p.Changes, sp.Change{Seq: uint64(i), Collection: sp.Cases, ID: "c1", Stamp: 1,
			Fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"open"`)}}})
	}
	f, err := c.Encode(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Decode(f, true); err != nil {
		t.Errorf("Decode(push of exactly MaxBatch=%d changes) = %v, want nil", sp.MaxBatch, err)
	}
}

// TestEncodeNeverCompressesHandshake: hello and welcome must be readable by
// any peer before compression is negotiated.
func TestEncodeNeverCompressesHandshake(t *testing.T) {
	c := testCodec(t, 0)
	big := strings.Repeat("z", 120)
	for _, m := range []sp.Message{
		&sp.Hello{Version: 1, Device: "dev1", Compression: []string{big, big, big}, Agent: big},
		&sp.Welcome{Version: 1, ServerID: big, Epoch: "e", User: big, Role: big, Limits: sp.Limits{MaxPayload: 1, MaxBatch: 1}},
	} {
		if n := len(marshalT(t, m)); n < 256 {
			t.Fatalf("%s payload is %d bytes; the test needs at least 256", m.Type(), n)
		}
		f, err := c.Encode(m, true)
		if err != nil {
			t.Fatalf("Encode(%s, true) = %v", m.Type(), err)
		}
		if f[1] != 0 {
			t.Errorf("Encode(%s, true) flags = %#x, want 0: the handshake is never compressed", m.Type(), f[1])
		}
		if _, err := c.Decode(f, false); err != nil {
			t.Errorf("Decode(%s, false) = %v, want nil", m.Type(), err)
		}
	}
}

func TestDecodeUnknownType(t *testing.T) {
	c := testCodec(t, 0)
	for _, typ := range []sp.Type{0, 9, 42, 255} {
		for _, payload := range [][]byte{[]byte(`{"future":true}`), []byte(`not even json`), nil} {
			m, err := c.Decode(plainFrame(typ, payload), false)
			if err != nil {
				t.Fatalf("Decode(type %d, %q) = %v, want nil error", typ, payload, err)
			}
			u, ok := m.(*sp.Unknown)
			if !ok || u.Type() != typ {
				t.Fatalf("Decode(type %d) = %#v, want &Unknown{T: %d}", typ, m, typ)
			}
			if err := u.Validate(); err != nil {
				t.Errorf("Unknown.Validate() = %v, want nil", err)
			}
		}
	}
	// A compressed unknown message is skipped too once zstd is negotiated.
	payload := []byte(`{"future":"` + strings.Repeat("a", 300) + `"}`)
	m, err := c.Decode(rawFrame(77, sp.FlagZstd, uint32(len(payload)), zstdAll(t, payload)), true)
	if u, ok := m.(*sp.Unknown); err != nil || !ok || u.T != 77 {
		t.Errorf("Decode(compressed type 77) = %#v, %v, want &Unknown{T: 77}, nil", m, err)
	}
}

func TestScopeContains(t *testing.T) {
	s := sp.Scope{Areas: []string{"Zuilen", "Lombok"}}
	if !s.Contains("Zuilen") || s.Contains("Overvecht") || s.Contains("zuilen") {
		t.Errorf("Scope%v.Contains: want only its areas, case-sensitively", s.Areas)
	}
	lead := sp.Scope{All: true, Areas: []string{"Zuilen"}}
	if !lead.Contains("Overvecht") {
		t.Errorf("Scope{All: true}.Contains(Overvecht) = false, want true")
	}
	if k := (sp.Eviction{Collection: sp.Cases, ID: "c1", Area: "x"}).Key(); k != (sp.Key{Collection: sp.Cases, ID: "c1"}) || k.String() != "cases/c1" {
		t.Errorf("Eviction.Key() = %v, want cases/c1", k)
	}
}

func TestTypeString(t *testing.T) {
	want := []string{"", "hello", "welcome", "error", "push", "ack", "changes", "caught_up", "scope"}
	for typ := sp.TypeHello; typ <= sp.TypeScope; typ++ {
		if got := typ.String(); got != want[typ] {
			t.Errorf("Type(%d).String() = %q, want %q", typ, got, want[typ])
		}
	}
	if got := sp.Type(99).String(); got != "type(99)" {
		t.Errorf("Type(99).String() = %q, want %q", got, "type(99)")
	}
}

func TestMarshalNoHTMLEscape(t *testing.T) {
	got := marshalT(t, map[string]string{"a": "<b>&</b>"})
	if want := `{"a":"<b>&</b>"}`; string(got) != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
}

// zeroReader reads zeros forever.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// zstdBomb compresses n zero bytes by streaming them through a zstd
// encoder, so that the test never holds the n bytes. With contentSize set
// the zstd frame header declares n; otherwise the size is unknown, as with
// any streamed frame.
func zstdBomb(tb testing.TB, n int64, contentSize bool) []byte {
	tb.Helper()
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(1<<20), // within the decoder's window limit: a bomb the decoder will really run
	)
	if err != nil {
		tb.Fatal(err)
	}
	if contentSize {
		enc.ResetContentSize(&buf, n)
	} else {
		enc.Reset(&buf)
	}
	if _, err := io.Copy(enc, io.LimitReader(zeroReader{}, n)); err != nil {
		tb.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeZstdBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("compresses 1 GiB of zeros")
	}
	const gib = 1 << 30
	bomb := zstdBomb(t, gib, false)
	bombFCS := zstdBomb(t, gib, true)
	t.Logf("1 GiB of zeros compresses to %d bytes (%d with content size)", len(bomb), len(bombFCS))
	if len(bomb) > 1<<20 {
		t.Fatalf("bomb is %d bytes; want a small frame", len(bomb))
	}
	// Sanity: the bomb really inflates past any limit.
	probe, err := zstd.NewReader(bytes.NewReader(bomb), zstd.WithDecoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(probe, sp.MaxPayload+1))
	probe.Close()
	if err != nil || n != sp.MaxPayload+1 {
		t.Fatalf("bomb inflates to %d bytes (%v), want more than %d", n, err, sp.MaxPayload)
	}

	const maxAlloc = 64 << 20
	tests := []struct {
		name     string
		limit    int
		declared uint32
		body     []byte
	}{
		{"declared 1 KiB", 0, 1 << 10, bomb},
		{"declared 1 MiB, 1 MiB codec", 1 << 20, 1 << 20, bomb},
		{"declared the 16 MiB maximum", 0, sp.MaxPayload, bomb},
		{"declared 0", 0, 0, bomb},
		{"zstd header declares 1 GiB", 0, sp.MaxPayload, bombFCS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testCodec(t, tt.limit)
			frame := rawFrame(sp.TypeChanges, sp.FlagZstd, tt.declared, tt.body)
			// Warm the codec up so that its one-off buffers do not count.
			_, _ = c.Decode(rawFrame(sp.TypeChanges, sp.FlagZstd, 2, zstdAll(t, []byte(`{}`))), true)

			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			m, err := c.Decode(frame, true)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)

			wantProtoErr(t, "Decode(zstd bomb)", err, sp.ErrFrameTooLarge)
			if m != nil {
				t.Errorf("Decode(zstd bomb) returned a message: %T", m)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxAlloc {
				t.Errorf("Decode(zstd bomb) allocated %d MiB, want under %d MiB", alloc>>20, maxAlloc>>20)
			} else {
				t.Logf("allocated %.1f MiB in %v", float64(alloc)/(1<<20), elapsed)
			}
			// Inflating the whole GiB takes seconds; refusing it takes
			// milliseconds. The bound is loose for slow, shared machines.
			if elapsed > 5*time.Second {
				t.Errorf("Decode(zstd bomb) took %v; it must stop at the declared length", elapsed)
			}
		})
	}
}

// TestCodecConcurrent: one codec serves many connections.
func TestCodecConcurrent(t *testing.T) {
	c := testCodec(t, 0)
	msgs := goldenMessages()
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 50 {
				m := msgs[(g+i)%len(msgs)]
				f, err := c.Encode(m, true)
				if err == nil {
					var got sp.Message
					got, err = c.Decode(f, true)
					if err == nil && !reflect.DeepEqual(got, m) {
						err = fmt.Errorf("round trip of %s differs", m.Type())
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A push whose changes break the change rules still decodes: each change is
// rejected alone by the receiver, so one bad change cannot end the session
// (and be resent, and fail, forever).
func TestDecodePushBadChangesPerChange(t *testing.T) {
	c := testCodec(t, 0)
	tests := []struct {
		name    string
		payload []byte
		want    *sp.Error
	}{
		{"push change with a bad device in covers", []byte(`{"changes":[{"seq":1,"coll":"entries","id":"e1","at":"0000000000000001","fields":{"_deleted":{"val":true,"covers":{"-x":1}}}}]}`), sp.ErrBadID},
		{"push change with an empty field name", []byte(`{"changes":[{"seq":1,"coll":"cases","id":"c1","at":"0000000000000001","fields":{"":{"val":1}}}]}`), sp.ErrBadField},
		{"push change without val", []byte(`{"changes":[{"seq":1,"coll":"cases","id":"c1","at":"0000000000000001","fields":{"title":{"seen":{"d":1}}}}]}`), sp.ErrBadValue},
		{"push change with stamp 0", []byte(`{"changes":[{"seq":1,"coll":"cases","id":"c1","at":"0000000000000000","fields":{"title":{"val":"t"}}}]}`), sp.ErrBadChange},
		{"push change of unknown collection", []byte(`{"changes":[{"seq":1,"coll":"notes","id":"c1","at":"0000000000000001","fields":{"title":{"val":"t"}}}]}`), sp.ErrUnknownCollection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.Decode(plainFrame(sp.TypePush, tt.payload), false)
			if err != nil {
				t.Fatalf("Decode(%s) = %v, want the push", tt.name, err)
			}
			p := m.(*sp.Push)
			err = p.Changes[0].Validate()
			wantProtoErr(t, fmt.Sprintf("Change.Validate(%s)", tt.name), err, tt.want)
			err = sp.ValidateChange(&p.Changes[0], nil, sp.Actor{User: "u", Device: "d"}, nil)
			wantProtoErr(t, fmt.Sprintf("ValidateChange(%s)", tt.name), err, tt.want)
		})
	}
}
