package syncproto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"pgregory.net/rapid"
)

// checkCanonicalAgrees fails if Canonical and its definition, the slow
// path, disagree on raw: both must fail, or both return the same bytes.
func checkCanonicalAgrees(t interface {
	Helper()
	Fatalf(string, ...any)
}, raw []byte) {
	t.Helper()
	got, gotErr := Canonical(raw)
	want, wantErr := canonicalSlow(raw)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("Canonical(%q) error = %v, slow path error = %v", raw, gotErr, wantErr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Canonical(%q) = %q, slow path %q", raw, got, want)
	}
}

func TestCanonical_FastPathAgrees(t *testing.T) {
	tests := []struct {
		raw  string
		fast bool // the fast path takes it (it is canonical already)
	}{
		{`"plain text"`, true},
		{`""`, true},
		{`"<b>&amp;</b> ' /"`, true}, // no HTML escaping
		{`"line\nbreak\ttab\r\"quote\" back\\slash \b\f"`, true},
		{`"\u0000\u001f\u0001\u007f"`, false}, // \u007f is written as the byte
		{"\"\u007f\"", true},
		{`"\u0000\u001f\u0001"`, true},
		{`"\u000a"`, false}, // written as \n
		{`"\u0008\u000c\u000d\u0009"`, false},
		{`"\u001F"`, false}, // upper-case hex
		{`"\u2028\u2029"`, true},
		{"\"\u2028\"", false}, // written escaped
		{`"\/"`, false},
		{`"\u00e9"`, false}, // written as UTF-8
		{`"é ünïcødé 日本 🏠"`, true},
		{"\"\xff\"", false},         // invalid UTF-8 becomes U+FFFD
		{"\"\xed\xa0\x80\"", false}, // a surrogate in UTF-8
		{"\"\uFFFD\"", true},
		{`"\ufffd"`, false},
		{`"\ud83c\udfe0"`, false},
		{`"\ud800"`, false}, // a lone surrogate
		{"\"a\x01b\"", false},
		{`"unterminated`, false},
		{`"a" `, false},
		{` "a"`, false},
		{`"a""b"`, false},
		{`"a\`, false},
		{`"a\u12"`, false},
		{`0`, true}, {`-0`, true}, {`12`, true}, {`-12.50`, true}, {`1e5`, true}, {`1E+05`, true},
		{`1.5e-3`, true}, {`1e999`, true}, {`123456789012345678901234567890`, true},
		{`01`, false}, {`-`, false}, {`1.`, false}, {`.5`, false}, {`1e`, false}, {`+1`, false},
		{`1 `, false}, {`0x10`, false}, {`NaN`, false},
		{`true`, true}, {`false`, true}, {`null`, true},
		{`tru`, false}, {`truex`, false}, {`nul`, false}, {`True`, false},
		{`[]`, true}, {`["a","b"]`, true}, {`[1,[2,[]],"x",null,true]`, true},
		{`[ ]`, false}, {`["a", "b"]`, false}, {`["a",]`, false}, {`[,]`, false}, {`[`, false}, {`["a"`, false},
		{`[{"b":1,"a":2}]`, false},
		{`{}`, false}, {`{"b":1,"a":2}`, false}, {`{"a":1}`, false},
		{strings.Repeat("[", 20) + strings.Repeat("]", 20), false}, // deeper than the fast path goes
		{``, false}, {` `, false}, {`}`, false},
	}
	for _, tt := range tests {
		checkCanonicalAgrees(t, []byte(tt.raw))
		n, ok := canonicalPrefix([]byte(tt.raw), 0)
		if fast := ok && n == len(tt.raw); fast != tt.fast {
			t.Errorf("fast path takes %q: %v, want %v", tt.raw, fast, tt.fast)
		}
	}
}

// TestCanonical_FastPathProperty: on any bytes, and on JSON built from
// arbitrary strings, numbers and arrays, Canonical equals its slow path;
// and the canonical form of a value is a fixed point the fast path takes.
func TestCanonical_FastPathProperty(t *testing.T) {
	str := rapid.OneOf(
		rapid.String(),
		rapid.StringOf(rapid.SampledFrom([]rune{'a', '"', '\\', '\n', '\b', '\x00', '\x1f', '\x7f', '\u2028', '\u2029', 'é', '\uFFFD', '<', '&', '/'})),
	)
	var value func(depth int) *rapid.Generator[any]
	value = func(depth int) *rapid.Generator[any] {
		gens := []*rapid.Generator[any]{
			rapid.Map(str, func(s string) any { return s }),
			rapid.Map(rapid.Float64(), func(f float64) any { return json.Number(fmtFloat(f)) }),
			rapid.Map(rapid.Int64(), func(i int64) any { return i }),
			rapid.Map(rapid.Bool(), func(b bool) any { return b }),
			rapid.Just[any](nil),
		}
		if depth < 3 {
			gens = append(gens, rapid.Map(rapid.SliceOfN(rapid.Deferred(func() *rapid.Generator[any] { return value(depth + 1) }), 0, 4), func(v []any) any { return v }))
		}
		return rapid.OneOf(gens...)
	}
	rapid.Check(t, func(t *rapid.T) {
		var raw []byte
		kind := rapid.IntRange(0, 2).Draw(t, "kind")
		switch kind {
		case 0: // any bytes, often JSON-looking
			raw = rapid.SliceOf(rapid.SampledFrom([]byte("\"\\u0123456789abcdefABCDEF[],-+.eEtruefalsn/ \xff\xed\xa0\x80\xe2\xa8"))).Draw(t, "bytes")
		case 1: // a value as encoding/json writes it, with HTML escaping on or off
			v := value(0).Draw(t, "value")
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(rapid.Bool().Draw(t, "escapeHTML"))
			if err := enc.Encode(v); err != nil {
				t.Skip("not encodable")
			}
			raw = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		case 2: // a JSON string of arbitrary bytes
			s := rapid.String().Draw(t, "s")
			if rapid.Bool().Draw(t, "invalid") {
				s += "\xff"
			}
			raw = []byte(`"` + s + `"`)
		}
		checkCanonicalAgrees(t, raw)
		if c, err := canonicalSlow(raw); err == nil && kind == 1 {
			// Values without objects, at most 4 deep: the fast path must
			// take their canonical form, or it gains nothing.
			if n, ok := canonicalPrefix(c, 0); !ok || n != len(c) {
				t.Fatalf("the fast path does not take canonical %q", c)
			}
		}
	})
}

func fmtFloat(f float64) string {
	b, err := json.Marshal(f)
	if err != nil {
		return "0"
	}
	return string(b)
}

func FuzzCanonical(f *testing.F) {
	for _, s := range []string{`"a\nb"`, `"\u001f"`, `"\u00e9"`, `[1,"x",[true]]`, `-0.5e+3`, `{"b":1,"a":2}`, "\"\xff\"", `"\u2028"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		checkCanonicalAgrees(t, raw)
		if c, err := Canonical(raw); err == nil && utf8.Valid(c) {
			again, err := Canonical(c)
			if err != nil || !bytes.Equal(again, c) {
				t.Fatalf("Canonical is not idempotent on %q: %q, %v", c, again, err)
			}
		}
	})
}
