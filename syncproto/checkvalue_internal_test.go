package syncproto

import (
	"encoding/json"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// checkValue reads a canonical string without escapes straight from its
// bytes; the string must be the one encoding/json decodes, and the limits
// must apply to it the same way.
func TestCheckValueStringFastPath(t *testing.T) {
	spec := fieldSpec{typ: typeText}
	rapid.Check(t, func(t *rapid.T) {
		s := rapid.OneOf(rapid.String(), rapid.StringOf(rapid.SampledFrom([]rune{'a', '"', '\\', '\n', '\x00', '<', '\u2028', 'é', '\uFFFD'}))).Draw(t, "s")
		raw, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		got, perr := checkValue("text", spec, raw)
		if perr != nil {
			t.Fatalf("%q: %v", s, perr)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Fatalf("%q: checkValue kept %s (%v)", s, got, err)
		}
	})
	// The limit counts the decoded string's bytes, escapes or not.
	for _, s := range []string{strings.Repeat("x", MaxText+1), strings.Repeat("\n", MaxText+1)} {
		raw, _ := Marshal(s)
		if _, perr := checkValue("text", spec, raw); perr == nil || !strings.Contains(perr.Error(), "limit") {
			t.Errorf("a text of %d bytes passed: %v", len(s), perr)
		}
	}
	// At the limit exactly, with or without escapes, it passes: the quotes
	// and the escapes are not the text's.
	for _, s := range []string{strings.Repeat("x", MaxText), strings.Repeat("\n", MaxText)} {
		raw, _ := Marshal(s)
		if _, perr := checkValue("text", spec, raw); perr != nil {
			t.Errorf("a text of exactly %d bytes was refused: %v", len(s), perr)
		}
	}
	id := fieldSpec{typ: typeID}
	if _, perr := checkValue("case_id", id, json.RawMessage(`"01HZCASE"`)); perr != nil {
		t.Errorf("a plain ID was refused: %v", perr)
	}
	if _, perr := checkValue("case_id", id, json.RawMessage(`"01HZ CASE"`)); perr == nil {
		t.Error("an ID with a space passed")
	}
	if _, perr := checkValue("text", spec, json.RawMessage(`"x`)); perr == nil {
		t.Error("an unterminated string passed")
	}
	if _, perr := checkValue("text", spec, json.RawMessage(`12`)); perr == nil {
		t.Error("a number passed as text")
	}
}
