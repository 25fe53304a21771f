package syncproto

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// LogicalBits is the width of the logical counter in a Stamp. A counter
// overflow carries into the wall-clock part, which then runs at most one
// millisecond ahead per 2^20 events in the same millisecond.
const LogicalBits = 20

// Stamp is a hybrid logical clock reading: milliseconds since the Unix epoch
// in the upper 44 bits and a logical counter in the lower 20. Stamps from one
// clock strictly increase; a clock that observes a stamp moves past it.
// On the wire a Stamp is 16 lowercase hexadecimal digits, so it sorts as a
// string and survives JSON parsers without 64-bit integers.
type Stamp uint64

// MakeStamp returns the stamp for wall time t with logical counter 0.
func MakeStamp(t time.Time) Stamp { return Stamp(uint64(t.UnixMilli()) << LogicalBits) }

// Time returns the wall-clock part of s.
func (s Stamp) Time() time.Time { return time.UnixMilli(int64(s >> LogicalBits)).UTC() }

// Logical returns the logical counter of s.
func (s Stamp) Logical() uint32 { return uint32(s & (1<<LogicalBits - 1)) }

func (s Stamp) String() string { return fmt.Sprintf("%016x", uint64(s)) }

// MarshalJSON writes s as a 16-digit hexadecimal string.
func (s Stamp) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 18)
	b = append(b, '"')
	b = fmt.Appendf(b, "%016x", uint64(s))
	return append(b, '"'), nil
}

// UnmarshalJSON reads a 16-digit hexadecimal string.
func (s *Stamp) UnmarshalJSON(b []byte) error {
	if len(b) == 18 && b[0] == '"' && b[17] == '"' {
		// The form every stamp is written in: no escapes to decode.
		var v uint64
		for _, c := range b[1:17] {
			switch {
			case c >= '0' && c <= '9':
				v = v<<4 | uint64(c-'0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | uint64(c-'a'+10)
			case c >= 'A' && c <= 'F':
				v = v<<4 | uint64(c-'A'+10)
			default:
				return Errorf(ErrMalformed, "stamp must be a string of 16 hex digits")
			}
		}
		*s = Stamp(v)
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil || len(str) != 16 {
		return Errorf(ErrMalformed, "stamp must be a string of 16 hex digits")
	}
	var raw [8]byte
	if _, err := hex.Decode(raw[:], []byte(str)); err != nil {
		return Errorf(ErrMalformed, "stamp must be a string of 16 hex digits")
	}
	var v uint64
	for _, c := range raw {
		v = v<<8 | uint64(c)
	}
	*s = Stamp(v)
	return nil
}

// MaxSkew is how far ahead of the server's clock a stamp may be before the
// server re-stamps it (PROTOCOL.md §6.4).
const MaxSkew = time.Minute

// Clock is a hybrid logical clock. It is safe for concurrent use.
//
// A clock reads wall time through Now plus an offset learnt from the server
// (a laptop whose clock is wrong corrects itself on first contact), and never
// goes backwards: after a stamp is issued or observed, every later stamp is
// greater. Observe ignores stamps more than MaxSkew ahead of the corrected
// wall clock, so one peer with a wild clock cannot drag everyone forward.
type Clock struct {
	mu     sync.Mutex
	now    func() time.Time
	offset time.Duration
	last   Stamp
}

// NewClock returns a clock reading wall time from now (time.Now if nil),
// starting after last (a persisted previous reading, or 0).
func NewClock(now func() time.Time, last Stamp) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now, last: last}
}

// SetOffset sets the correction added to the wall clock, typically the
// server's time minus the local time as measured at the handshake.
func (c *Clock) SetOffset(d time.Duration) {
	c.mu.Lock()
	c.offset = d
	c.mu.Unlock()
}

// Offset returns the correction set by SetOffset.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// wall returns the corrected physical time as a stamp. Callers hold mu.
func (c *Clock) wall() Stamp { return MakeStamp(c.now().Add(c.offset)) }

// Now returns a new stamp, greater than every stamp issued or observed.
func (c *Clock) Now() Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.wall()
	if s <= c.last {
		s = c.last + 1
	}
	c.last = s
	return s
}

// Last returns the latest stamp issued or observed, for persisting.
func (c *Clock) Last() Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Observe moves the clock past a stamp seen from a peer, unless the stamp is
// more than MaxSkew ahead of the corrected wall clock. It reports whether it
// accepted the stamp.
func (c *Clock) Observe(s Stamp) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s > c.wall()+Stamp(MaxSkew.Milliseconds())<<LogicalBits {
		return false
	}
	if s > c.last {
		c.last = s
	}
	return true
}

// Bound returns s if it is at most MaxSkew ahead of the clock's corrected
// wall time, and otherwise a fresh stamp from the clock. The server applies
// it to every pushed change: a laptop hours ahead gets the server's time
// instead, so it neither wins every later conflict nor drags other clocks.
func (c *Clock) Bound(s Stamp) (Stamp, bool) {
	if c.Observe(s) {
		return s, false
	}
	return c.Now(), true
}
