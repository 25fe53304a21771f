package syncproto

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// crockford is Crockford's base-32 alphabet: no I, L, O or U, so IDs read
// aloud or copied by hand survive.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// IDGenerator makes record IDs on a device without coordination: 48 bits
// of milliseconds since the Unix epoch followed by 80 random bits, written
// as 26 characters of Crockford base 32 (the ULID layout). IDs sort by
// creation time; IDs made in the same millisecond by one generator increase
// monotonically, so they sort in creation order too.
type IDGenerator struct {
	mu   sync.Mutex
	now  func() time.Time
	last [16]byte
}

// NewIDGenerator returns a generator reading time from now (time.Now if nil).
func NewIDGenerator(now func() time.Time) *IDGenerator {
	if now == nil {
		now = time.Now
	}
	return &IDGenerator{now: now}
}

var defaultIDs = NewIDGenerator(nil)

// NewID returns a new record ID from the process-wide generator.
func NewID() string { return defaultIDs.New() }

// New returns a new ID.
func (g *IDGenerator) New() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ms := uint64(g.now().UnixMilli())
	var id [16]byte
	binary.BigEndian.PutUint16(id[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(id[2:6], uint32(ms))
	if string(id[:6]) == string(g.last[:6]) || string(id[:6]) < string(g.last[:6]) {
		// Same (or an earlier, if the clock stepped back) millisecond:
		// increment the previous ID so order still follows creation.
		id = g.last
		for i := 15; i >= 6; i-- {
			id[i]++
			if id[i] != 0 {
				break
			}
		}
	} else {
		if _, err := rand.Read(id[6:]); err != nil {
			panic("bug: crypto/rand failed: " + err.Error())
		}
	}
	g.last = id
	return encodeULID(id)
}

func encodeULID(id [16]byte) string {
	// 128 bits → 26 characters; the first character carries 3 bits.
	var out [26]byte
	hi := binary.BigEndian.Uint64(id[0:8])
	lo := binary.BigEndian.Uint64(id[8:16])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// MaxIDLen is the longest record, device or change identifier accepted.
const MaxIDLen = 64

// ValidID reports whether s may name a record or a device: 1 to 64
// characters of ASCII letters, digits, '-' and '_', starting with a letter
// or digit. Generated IDs qualify; so do imported IDs such as "case-000001".
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

// MaxAreaLen is the longest area name accepted, in bytes.
const MaxAreaLen = 64

// ValidArea reports whether s may name an area: 1 to 64 bytes of UTF-8
// without control characters, commas or leading or trailing spaces.
// Areas are neighbourhood names such as "Zuilen" or "Lombok-Oost".
func ValidArea(s string) bool {
	if len(s) == 0 || len(s) > MaxAreaLen || !utf8.ValidString(s) {
		return false
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == ',' || r == '*' {
			return false
		}
	}
	return true
}
