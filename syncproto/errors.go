package syncproto

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Code classifies an error on the wire. Peers act on codes, never on message
// text: the text is for people and may change between releases.
type Code string

// The error codes. PROTOCOL.md §8 defines when each is sent.
const (
	// CodeAuth: the device token is missing, unknown or malformed.
	CodeAuth Code = "auth"
	// CodeRevoked: the device was revoked; the client must wipe its replica.
	CodeRevoked Code = "revoked"
	// CodeScope: the change touches a record outside the user's areas.
	CodeScope Code = "scope"
	// CodeValidation: the change or message breaks a rule of the record model.
	CodeValidation Code = "validation"
	// CodeVersion: the peer speaks a protocol version this side does not.
	CodeVersion Code = "version"
	// CodeTooLarge: a frame, message, batch, record or field exceeds a limit.
	CodeTooLarge Code = "too_large"
	// CodeRate: the device sends faster than the server allows; retry later.
	CodeRate Code = "rate"
	// CodeProtocol: a frame or message is malformed or out of order.
	CodeProtocol Code = "protocol"
	// CodeInternal: the server failed; the message is generic and the detail
	// is only logged on the server.
	CodeInternal Code = "internal"
)

// Codes lists every code this version defines.
var Codes = []Code{CodeAuth, CodeRevoked, CodeScope, CodeValidation, CodeVersion, CodeTooLarge, CodeRate, CodeProtocol, CodeInternal}

// Known reports whether c is a code this version defines.
func (c Code) Known() bool {
	for _, k := range Codes {
		if c == k {
			return true
		}
	}
	return false
}

// Error is an error that can cross the wire. Reason refines Code with a
// machine-readable cause (for example "too_old" under CodeVersion); Message
// is for people. Change and Field name what the error is about, when it is
// about one change or one field.
type Error struct {
	Code    Code   `json:"code"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message"`
	// Change is the device sequence number of the change the error is about.
	Change uint64 `json:"change,omitempty"`
	// Field is the record field the error is about.
	Field string `json:"field,omitempty"`
	// RetryAfterMS tells a rate-limited client how long to wait.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Reason
	}
	if e.Reason != "" && e.Message != "" {
		return fmt.Sprintf("syncproto: %s (%s/%s)", msg, e.Code, e.Reason)
	}
	return fmt.Sprintf("syncproto: %s (%s)", msg, e.Code)
}

// Is reports whether target is an *Error with the same code and, if the
// target names a reason, the same reason. It makes the sentinels below work
// with errors.Is whatever the message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok || t == nil {
		return false
	}
	return t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// Errorf returns a new *Error with the code and reason of sentinel and a
// formatted message. The result matches sentinel with errors.Is.
//
// String arguments are clipped to clipLen bytes and the message to
// maxMessage: errors quote what a peer sent, and must neither echo record
// content at length nor outgrow MaxMessage (a peer would refuse the ack
// carrying it, and resend the same push forever).
func Errorf(sentinel *Error, format string, args ...any) *Error {
	for i, a := range args {
		switch v := a.(type) {
		case string:
			args[i] = clip(v, clipLen)
		case Collection:
			args[i] = Collection(clip(string(v), clipLen))
		}
	}
	return &Error{Code: sentinel.Code, Reason: sentinel.Reason, Message: clip(fmt.Sprintf(format, args...), maxMessage)}
}

const (
	clipLen    = 48
	maxMessage = 1024
)

// clip shortens s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// CodeOf returns the wire code for err: the code of the first *Error in its
// chain, or CodeInternal for anything else.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ToWire returns the *Error to send for err. Errors that are not *Error
// become a generic internal error: Go error text never crosses the wire.
func ToWire(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: "internal server error; the server logged the cause"}
}

// Err returns a bare error for the code, for tests and callers that only
// care about the class.
func (c Code) Err() *Error { return &Error{Code: c, Message: string(c)} }

func sentinel(code Code, reason, msg string) *Error {
	return &Error{Code: code, Reason: reason, Message: msg}
}

// Sentinels. Compare with errors.Is; the message of a returned error says
// more than the sentinel's.
var (
	// ErrTooOldVersion is returned when the peer's protocol version is older
	// than MinVersion: the peer must upgrade.
	ErrTooOldVersion = sentinel(CodeVersion, "too_old", "protocol version too old; upgrade the client")
	// ErrUnknownVersion is returned when the peer's protocol version is newer
	// than Version: this side must upgrade.
	ErrUnknownVersion = sentinel(CodeVersion, "unknown", "unknown protocol version; upgrade the server")

	// ErrFrameTooLarge is returned when a frame's payload exceeds the limit.
	ErrFrameTooLarge = sentinel(CodeTooLarge, "frame", "frame too large")
	// ErrBatchTooLarge is returned when a push holds more changes than allowed.
	ErrBatchTooLarge = sentinel(CodeTooLarge, "batch", "too many changes in one push")
	// ErrTextTooLarge is returned when a text field exceeds MaxText.
	ErrTextTooLarge = sentinel(CodeTooLarge, "text", "text too large")
	// ErrRecordTooLarge is returned when a record would exceed MaxRecord.
	ErrRecordTooLarge = sentinel(CodeTooLarge, "record", "record too large")

	// ErrMalformed is returned when a frame or message cannot be decoded.
	ErrMalformed = sentinel(CodeProtocol, "malformed", "malformed frame")
	// ErrUnexpected is returned when a message arrives in a state that does
	// not allow it, such as a push before hello.
	ErrUnexpected = sentinel(CodeProtocol, "unexpected", "unexpected message")
	// ErrCompression is returned for a compressed frame when compression was
	// not negotiated, or for an unknown flag.
	ErrCompression = sentinel(CodeProtocol, "compression", "compression not negotiated")

	// ErrUnknownCollection is returned for a collection other than cases and entries.
	ErrUnknownCollection = sentinel(CodeValidation, "unknown_collection", "unknown collection")
	// ErrUnknownKind is returned for an entry kind this version does not define.
	ErrUnknownKind = sentinel(CodeValidation, "unknown_kind", "unknown entry kind")
	// ErrMissingField is returned when a new record lacks a required field.
	ErrMissingField = sentinel(CodeValidation, "missing_field", "missing required field")
	// ErrBadEnum is returned for a value outside a field's enumeration.
	ErrBadEnum = sentinel(CodeValidation, "bad_enum", "value not allowed")
	// ErrBadDate is returned for a date or time that does not parse.
	ErrBadDate = sentinel(CodeValidation, "bad_date", "bad date")
	// ErrBadValue is returned for a field value of the wrong JSON type.
	ErrBadValue = sentinel(CodeValidation, "bad_value", "bad field value")
	// ErrBadField is returned for a field name that is not allowed.
	ErrBadField = sentinel(CodeValidation, "bad_field", "bad field name")
	// ErrBadID is returned for a record, device or area identifier that is malformed.
	ErrBadID = sentinel(CodeValidation, "bad_id", "bad identifier")
	// ErrBadChange is returned for a change whose sequence, stamp or
	// causal context is inconsistent.
	ErrBadChange = sentinel(CodeValidation, "bad_change", "inconsistent change")
	// ErrUnknownCase is returned for an entry whose case does not exist.
	ErrUnknownCase = sentinel(CodeValidation, "unknown_case", "entry for an unknown case")
	// ErrImmutable is returned when a change rewrites a field fixed at creation.
	ErrImmutable = sentinel(CodeValidation, "immutable", "field cannot change after creation")
	// ErrNotAuthor is returned when anyone but its author edits an entry.
	ErrNotAuthor = sentinel(CodeValidation, "not_author", "only the author may edit an entry")
	// ErrNotDeletable is returned when a change deletes a case: cases are
	// closed, not deleted.
	ErrNotDeletable = sentinel(CodeValidation, "not_deletable", "cases are closed, not deleted")

	// ErrOutOfScope is returned for a change to a record outside the user's areas.
	ErrOutOfScope = sentinel(CodeScope, "", "record outside your areas")
)
