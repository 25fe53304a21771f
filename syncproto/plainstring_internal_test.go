package syncproto

import (
	"encoding/json"
	"testing"
)

// plainString must agree with encoding/json wherever it answers, and
// answer for the plain strings that make up most stored values.
func TestPlainString(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{`"Lombok-Oost"`, "Lombok-Oost", true},
		{`""`, "", true},
		{`"één"`, "één", true},
		{`"a\"b"`, "", false},   // an escape: encoding/json decodes it
		{`"a\nb"`, "", false},   // likewise
		{"\"a\nb\"", "", false}, // a raw control character is invalid JSON
		{"\"\xff\"", "", false}, // invalid UTF-8 decodes to U+FFFD
		{`"a"b"`, "", false},    // not one string
		{`12`, "", false},
		{`"`, "", false},
		{``, "", false},
	}
	for _, tt := range tests {
		got, ok := plainString([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("plainString(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzPlainString(f *testing.F) {
	for _, s := range []string{`"x"`, `""`, `"a\"b"`, "\"\xff\"", `"é"`, `"a"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := plainString(b)
		if !ok {
			return
		}
		var want string
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("plainString(%q) = %q, but encoding/json refuses it: %v", b, got, err)
		}
		if got != want {
			t.Fatalf("plainString(%q) = %q; encoding/json decodes %q", b, got, want)
		}
	})
}
