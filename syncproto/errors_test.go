package syncproto_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	sp "github.com/casesync/casesync/syncproto"
)

// sentinels lists every sentinel error.
var sentinels = []*sp.Error{
	sp.ErrTooOldVersion, sp.ErrUnknownVersion,
	sp.ErrFrameTooLarge, sp.ErrBatchTooLarge, sp.ErrTextTooLarge, sp.ErrRecordTooLarge,
	sp.ErrMalformed, sp.ErrUnexpected, sp.ErrCompression,
	sp.ErrUnknownCollection, sp.ErrUnknownKind, sp.ErrMissingField, sp.ErrBadEnum, sp.ErrBadDate,
	sp.ErrBadValue, sp.ErrBadField, sp.ErrBadID, sp.ErrBadChange, sp.ErrUnknownCase,
	sp.ErrImmutable, sp.ErrNotAuthor, sp.ErrNotDeletable,
	sp.ErrOutOfScope,
}

func TestSentinelsWellFormed(t *testing.T) {
	type key struct {
		code   sp.Code
		reason string
	}
	seen := map[key]*sp.Error{}
	for _, s := range sentinels {
		if !s.Code.Known() {
			t.Errorf("sentinel %v has unknown code %q", s, s.Code)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("sentinel %v: Validate() = %v", s, err)
		}
		if s.Message == "" {
			t.Errorf("sentinel %v has no message", s)
		}
		k := key{s.Code, s.Reason}
		if prev, dup := seen[k]; dup {
			t.Errorf("sentinels %v and %v share code and reason", prev, s)
		}
		seen[k] = s
	}
}

func TestErrorIs(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"sentinel is itself", sp.ErrBadDate, sp.ErrBadDate, true},
		{"Errorf matches its sentinel", sp.Errorf(sp.ErrBadDate, "field %q", "x"), sp.ErrBadDate, true},
		{"same code and reason, other message", &sp.Error{Code: sp.CodeValidation, Reason: "bad_date", Message: "whatever"}, sp.ErrBadDate, true},
		{"same code and reason, other field and change", &sp.Error{Code: sp.CodeValidation, Reason: "bad_date", Field: "f", Change: 9}, sp.ErrBadDate, true},
		{"same code, other reason", sp.Errorf(sp.ErrBadEnum, "x"), sp.ErrBadDate, false},
		{"same reason, other code", &sp.Error{Code: sp.CodeProtocol, Reason: "bad_date"}, sp.ErrBadDate, false},
		{"no reason does not match a reason", &sp.Error{Code: sp.CodeValidation}, sp.ErrBadDate, false},
		{"target without reason matches any reason", sp.Errorf(sp.ErrBadDate, "x"), sp.CodeValidation.Err(), true},
		{"target without reason matches no reason", &sp.Error{Code: sp.CodeValidation}, sp.CodeValidation.Err(), true},
		{"target without reason, other code", sp.Errorf(sp.ErrBadDate, "x"), sp.CodeProtocol.Err(), false},
		{"scope sentinel has no reason", &sp.Error{Code: sp.CodeScope, Reason: "future_reason"}, sp.ErrOutOfScope, true},
		{"too_large reasons differ", sp.Errorf(sp.ErrFrameTooLarge, "x"), sp.ErrBatchTooLarge, false},
		{"too_large class", sp.Errorf(sp.ErrFrameTooLarge, "x"), sp.CodeTooLarge.Err(), true},
		{"version reasons differ", sp.Errorf(sp.ErrTooOldVersion, "x"), sp.ErrUnknownVersion, false},
		{"wrapped with %w", fmt.Errorf("push: %w", sp.Errorf(sp.ErrNotAuthor, "x")), sp.ErrNotAuthor, true},
		{"doubly wrapped", fmt.Errorf("a: %w", fmt.Errorf("b: %w", sp.Errorf(sp.ErrNotAuthor, "x"))), sp.ErrNotAuthor, true},
		{"joined", errors.Join(io.EOF, sp.Errorf(sp.ErrImmutable, "x")), sp.ErrImmutable, true},
		{"plain error with the same text", errors.New(sp.ErrBadDate.Error()), sp.ErrBadDate, false},
		{"plain error", io.EOF, sp.ErrBadDate, false},
		{"*Error against a plain target", sp.ErrBadDate, io.EOF, false},
	}
	for _, tt := range tests {
		if got := errors.Is(tt.err, tt.target); got != tt.want {
			t.Errorf("%s: errors.Is(%v, %v) = %v, want %v", tt.name, tt.err, tt.target, got, tt.want)
		}
	}
}

func TestErrorf(t *testing.T) {
	e := sp.Errorf(sp.ErrBadDate, "field %q: %d", "next_action", 3)
	if e.Code != sp.CodeValidation || e.Reason != "bad_date" {
		t.Errorf("Errorf(ErrBadDate) = %q/%q, want validation/bad_date", e.Code, e.Reason)
	}
	if want := `field "next_action": 3`; e.Message != want {
		t.Errorf("Errorf message = %q, want %q", e.Message, want)
	}
	if e == sp.ErrBadDate {
		t.Errorf("Errorf returned the sentinel itself")
	}
	e.Field = "x"
	if sp.ErrBadDate.Field != "" {
		t.Errorf("changing Errorf's result changed the sentinel")
	}
}

func TestErrorText(t *testing.T) {
	// Error() is for people; check only that it carries the class.
	for _, e := range []*sp.Error{sp.ErrBadDate, {Code: sp.CodeRate}, {Code: sp.CodeScope, Message: "m"}, {Code: sp.CodeVersion, Reason: "too_old"}} {
		s := e.Error()
		if !strings.Contains(s, string(e.Code)) || (e.Reason != "" && e.Message != "" && !strings.Contains(s, e.Reason)) {
			t.Errorf("(%#v).Error() = %q, want it to name code and reason", e, s)
		}
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want sp.Code
	}{
		{sp.ErrBadDate, sp.CodeValidation},
		{sp.Errorf(sp.ErrFrameTooLarge, "x"), sp.CodeTooLarge},
		{fmt.Errorf("ctx: %w", sp.ErrOutOfScope), sp.CodeScope},
		{&sp.Error{Code: "future"}, "future"},
		{errors.New("disk full"), sp.CodeInternal},
		{fmt.Errorf("ctx: %w", io.ErrUnexpectedEOF), sp.CodeInternal},
	}
	for _, tt := range tests {
		if got := sp.CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestToWire(t *testing.T) {
	e := sp.Errorf(sp.ErrNotAuthor, "only anouk may edit")
	if got := sp.ToWire(e); got != e {
		t.Errorf("ToWire(*Error) = %#v, want the same *Error", got)
	}
	if got := sp.ToWire(fmt.Errorf("store: %w", e)); got != e {
		t.Errorf("ToWire(wrapped *Error) = %#v, want the inner *Error", got)
	}
	secret := errors.New("open /var/lib/casesync/db: permission denied; token=s3cr3t")
	for _, err := range []error{secret, fmt.Errorf("commit: %w", secret)} {
		got := sp.ToWire(err)
		if got.Code != sp.CodeInternal || got.Reason != "" || got.Field != "" || got.Change != 0 {
			t.Errorf("ToWire(%v) = %#v, want a bare internal error", err, got)
		}
		if strings.Contains(got.Message, "s3cr3t") || strings.Contains(got.Message, "/var/lib") || strings.Contains(got.Message, "permission") {
			t.Errorf("ToWire(%v).Message = %q leaks the Go error text", err, got.Message)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("ToWire(%v).Validate() = %v", err, err)
		}
	}
}

func TestCodeKnown(t *testing.T) {
	want := []sp.Code{"auth", "revoked", "scope", "validation", "version", "too_large", "rate", "protocol", "internal"}
	if len(sp.Codes) != len(want) {
		t.Errorf("Codes = %v, want %v", sp.Codes, want)
	}
	for _, c := range want {
		if !c.Known() {
			t.Errorf("Code(%q).Known() = false, want true", c)
		}
	}
	for _, c := range []sp.Code{"", "future", "Auth", "too-large"} {
		if c.Known() {
			t.Errorf("Code(%q).Known() = true, want false", c)
		}
	}
	for _, c := range sp.Codes {
		if e := c.Err(); e.Code != c || !errors.Is(e, &sp.Error{Code: c}) {
			t.Errorf("Code(%q).Err() = %#v, want an *Error of that code", c, e)
		}
	}
}

func TestCloseCodes(t *testing.T) {
	want := map[sp.Code]int{
		sp.CodeAuth:       4401,
		sp.CodeRevoked:    4403,
		sp.CodeTooLarge:   4413,
		sp.CodeVersion:    4426,
		sp.CodeRate:       4429,
		sp.CodeProtocol:   4400,
		sp.CodeValidation: 4400,
		sp.CodeScope:      4400,
		sp.CodeInternal:   4500,
	}
	for _, c := range sp.Codes {
		w, ok := want[c]
		if !ok {
			t.Errorf("Code %q has no expected close code in this test", c)
			continue
		}
		cc := c.CloseCode()
		if cc != w {
			t.Errorf("Code(%q).CloseCode() = %d, want %d", c, cc, w)
		}
		// Round trip: the close code stands for the code, except that
		// validation and scope errors share protocol's close code.
		back, ok := sp.CodeForClose(cc)
		wantBack := c
		if c == sp.CodeValidation || c == sp.CodeScope {
			wantBack = sp.CodeProtocol
		}
		if !ok || back != wantBack {
			t.Errorf("CodeForClose(Code(%q).CloseCode() = %d) = %q, %v, want %q, true", c, cc, back, ok, wantBack)
		}
		if back.CloseCode() != cc {
			t.Errorf("CodeForClose(%d).CloseCode() = %d, want %d", cc, back.CloseCode(), cc)
		}
	}
	if got := sp.Code("future").CloseCode(); got != sp.CloseInternal {
		t.Errorf("Code(future).CloseCode() = %d, want %d", got, sp.CloseInternal)
	}
	// WebSocket's own codes map onto the nearest class; normal closes and
	// unknown codes are not errors.
	for cc, w := range map[int]sp.Code{1002: sp.CodeProtocol, 1007: sp.CodeProtocol, 1009: sp.CodeTooLarge, 1011: sp.CodeInternal} {
		if got, ok := sp.CodeForClose(cc); !ok || got != w {
			t.Errorf("CodeForClose(%d) = %q, %v, want %q, true", cc, got, ok, w)
		}
	}
	for _, cc := range []int{sp.CloseNormal, sp.CloseGoingAway, 0, 1005, 1006, 4000, 4999} {
		if got, ok := sp.CodeForClose(cc); ok {
			t.Errorf("CodeForClose(%d) = %q, true, want false", cc, got)
		}
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		peer int
		want *sp.Error // nil: accepted
		not  *sp.Error
	}{
		{sp.Version, nil, nil},
		{sp.MinVersion, nil, nil},
		{sp.MinVersion - 1, sp.ErrTooOldVersion, sp.ErrUnknownVersion},
		{-1, sp.ErrTooOldVersion, sp.ErrUnknownVersion},
		{-1 << 62, sp.ErrTooOldVersion, sp.ErrUnknownVersion},
		{sp.Version + 1, sp.ErrUnknownVersion, sp.ErrTooOldVersion},
		{1 << 62, sp.ErrUnknownVersion, sp.ErrTooOldVersion},
	}
	for _, tt := range tests {
		err := sp.Negotiate(tt.peer)
		if tt.want == nil {
			if err != nil {
				t.Errorf("Negotiate(%d) = %v, want nil", tt.peer, err)
			}
			continue
		}
		wantProtoErr(t, fmt.Sprintf("Negotiate(%d)", tt.peer), err, tt.want)
		if errors.Is(err, tt.not) {
			t.Errorf("Negotiate(%d) = %v, also matches %v", tt.peer, err, tt.not)
		}
		if sp.CodeOf(err).CloseCode() != sp.CloseVersion {
			t.Errorf("Negotiate(%d) closes with %d, want %d", tt.peer, sp.CodeOf(err).CloseCode(), sp.CloseVersion)
		}
	}
}
