package syncproto_test

import (
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sp "github.com/casesync/casesync/syncproto"
)

// fakeTime is an injectable wall clock, safe for concurrent use.
type fakeTime struct{ ns atomic.Int64 }

func newFakeTime(t time.Time) *fakeTime {
	f := &fakeTime{}
	f.ns.Store(t.UnixNano())
	return f
}

func (f *fakeTime) Now() time.Time          { return time.Unix(0, f.ns.Load()) }
func (f *fakeTime) Set(t time.Time)         { f.ns.Store(t.UnixNano()) }
func (f *fakeTime) Advance(d time.Duration) { f.ns.Add(int64(d)) }

var clockT0 = time.Date(2025, time.January, 6, 9, 30, 0, 0, time.UTC)

func TestStampJSONRoundTrip(t *testing.T) {
	tests := []struct {
		s    sp.Stamp
		want string
	}{
		{0, `"0000000000000000"`},
		{1, `"0000000000000001"`},
		{sp.MakeStamp(clockT0) | 3, `"1943af321c000003"`},
		{sp.Stamp(1<<64 - 1), `"ffffffffffffffff"`},
		{0x0123456789abcdef, `"0123456789abcdef"`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.s)
		if err != nil || string(b) != tt.want {
			t.Errorf("json.Marshal(Stamp(%#x)) = %s, %v, want %s", uint64(tt.s), b, err, tt.want)
		}
		if got := tt.s.String(); `"`+got+`"` != tt.want {
			t.Errorf("Stamp(%#x).String() = %s, want %s without quotes", uint64(tt.s), got, tt.want)
		}
		var back sp.Stamp
		if err := json.Unmarshal(b, &back); err != nil || back != tt.s {
			t.Errorf("json.Unmarshal(%s) = %#x, %v, want %#x", b, uint64(back), err, uint64(tt.s))
		}
	}
	// Inside a struct, as in a change, and as a string that sorts like the stamp.
	type wrap struct {
		At sp.Stamp `json:"at"`
	}
	var got wrap
	if err := json.Unmarshal([]byte(`{"at":"1943af321c000003"}`), &got); err != nil || got.At != sp.MakeStamp(clockT0)|3 {
		t.Errorf(`Unmarshal({"at":…}) = %#x, %v, want %#x`, uint64(got.At), err, uint64(sp.MakeStamp(clockT0)|3))
	}
	a, b := sp.Stamp(0x00ff), sp.Stamp(0x0100)
	if !(a.String() < b.String()) {
		t.Errorf("Stamp strings do not sort like stamps: %s >= %s", a, b)
	}
}

// TestStampUnmarshalUpperCase: receivers also accept upper-case digits
// (PROTOCOL.md §4.2.1); senders always write lower case.
func TestStampUnmarshalUpperCase(t *testing.T) {
	for _, in := range []string{`"1943AF321C000003"`, `"1943Af321c000003"`} {
		var s sp.Stamp
		if err := s.UnmarshalJSON([]byte(in)); err != nil || s != sp.MakeStamp(clockT0)|3 {
			t.Errorf("Stamp.UnmarshalJSON(%s) = %#x, %v, want %#x", in, uint64(s), err, uint64(sp.MakeStamp(clockT0)|3))
		}
		if b, _ := s.MarshalJSON(); string(b) != `"1943af321c000003"` {
			t.Errorf("MarshalJSON = %s, want lower case", b)
		}
	}
}

func TestStampUnmarshalBad(t *testing.T) {
	for _, in := range []string{
		``,
		`null`,
		`12345`,
		`true`,
		`{}`,
		`[]`,
		`""`,
		`"1943af321c00000"`,   // 15 digits
		`"1943af321c0000030"`, // 17 digits
		`"1943af321c00000g"`,  // not hex
		`"0x43af321c000003"`,  // prefix
		`"-943af321c000003"`,  // sign
		`" 943af321c000003"`,  // space
		`"1943af321c000003`,   // unterminated
		`"1943af321c000003"x`, // trailing
		`"é943af321c00000"`,   // 16 bytes, not hex
	} {
		var s sp.Stamp = 42
		err := s.UnmarshalJSON([]byte(in))
		wantProtoErr(t, "Stamp.UnmarshalJSON("+in+")", err, sp.ErrMalformed)
		if s != 42 {
			t.Errorf("Stamp.UnmarshalJSON(%s) changed the stamp to %#x on error", in, uint64(s))
		}
	}
	// Through encoding/json, the error reaches the caller as the *Error.
	var v struct {
		At sp.Stamp `json:"at"`
	}
	err := json.Unmarshal([]byte(`{"at":"nope"}`), &v)
	if !errors.Is(err, sp.ErrMalformed) {
		t.Errorf(`json.Unmarshal({"at":"nope"}) = %v, want %v`, err, sp.ErrMalformed)
	}
}

func TestStampParts(t *testing.T) {
	at := clockT0.Add(123 * time.Millisecond)
	s := sp.MakeStamp(at) | 77
	if got := s.Time(); !got.Equal(at) {
		t.Errorf("Stamp.Time() = %v, want %v", got, at)
	}
	if got := s.Logical(); got != 77 {
		t.Errorf("Stamp.Logical() = %d, want 77", got)
	}
	if got := sp.MakeStamp(at.Add(999 * time.Microsecond)); got != sp.MakeStamp(at) {
		t.Errorf("MakeStamp keeps sub-millisecond time: %#x, want %#x", uint64(got), uint64(sp.MakeStamp(at)))
	}
}

func TestClockNowMonotonic(t *testing.T) {
	ft := newFakeTime(clockT0)
	c := sp.NewClock(ft.Now, 0)
	s1 := c.Now()
	if s1 != sp.MakeStamp(clockT0) {
		t.Errorf("first Now() = %#x, want MakeStamp(t0) = %#x", uint64(s1), uint64(sp.MakeStamp(clockT0)))
	}
	s2 := c.Now() // same millisecond: logical counter
	if s2 != s1+1 {
		t.Errorf("Now() in the same ms = %#x, want %#x", uint64(s2), uint64(s1+1))
	}
	ft.Advance(5 * time.Millisecond)
	s3 := c.Now()
	if s3 != sp.MakeStamp(clockT0.Add(5*time.Millisecond)) {
		t.Errorf("Now() after 5 ms = %#x, want the wall time %#x", uint64(s3), uint64(sp.MakeStamp(clockT0.Add(5*time.Millisecond))))
	}
	ft.Set(clockT0.Add(-time.Hour)) // the wall clock steps back
	s4 := c.Now()
	if s4 <= s3 {
		t.Errorf("Now() after the wall clock stepped back = %#x, want > %#x", uint64(s4), uint64(s3))
	}
	if c.Last() != s4 {
		t.Errorf("Last() = %#x, want the last issued %#x", uint64(c.Last()), uint64(s4))
	}
}

func TestClockStartsAfterPersisted(t *testing.T) {
	last := sp.MakeStamp(clockT0.Add(time.Hour)) | 9
	c := sp.NewClock(newFakeTime(clockT0).Now, last)
	if s := c.Now(); s != last+1 {
		t.Errorf("Now() after a persisted %#x = %#x, want %#x", uint64(last), uint64(s), uint64(last+1))
	}
}

func TestClockNowConcurrent(t *testing.T) {
	ft := newFakeTime(clockT0)
	c := sp.NewClock(ft.Now, 0)
	const goroutines, per = 8, 2000
	got := make([][]sp.Stamp, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if i%100 == 0 {
					ft.Advance(time.Millisecond)
				}
				got[g] = append(got[g], c.Now())
			}
		}()
	}
	wg.Wait()
	seen := make(map[sp.Stamp]bool, goroutines*per)
	for g, stamps := range got {
		for i, s := range stamps {
			if i > 0 && s <= stamps[i-1] {
				t.Fatalf("goroutine %d: Now() = %#x after %#x, want strictly increasing", g, uint64(s), uint64(stamps[i-1]))
			}
			if seen[s] {
				t.Fatalf("Now() returned %#x twice", uint64(s))
			}
			seen[s] = true
		}
	}
}

func TestClockObserve(t *testing.T) {
	ft := newFakeTime(clockT0)
	c := sp.NewClock(ft.Now, 0)
	before := c.Now()

	ahead := sp.MakeStamp(clockT0.Add(3 * time.Hour))
	if c.Observe(ahead) {
		t.Errorf("Observe(3 h ahead) = true, want false")
	}
	if c.Last() != before {
		t.Errorf("Observe(3 h ahead) moved the clock to %#x, want %#x", uint64(c.Last()), uint64(before))
	}
	if s := c.Now(); s >= ahead || s != before+1 {
		t.Errorf("Now() after refusing a 3 h stamp = %#x, want %#x", uint64(s), uint64(before+1))
	}

	// Within MaxSkew: accepted, and the clock moves past it.
	near := sp.MakeStamp(clockT0.Add(30*time.Second)) | 5
	if !c.Observe(near) {
		t.Errorf("Observe(30 s ahead) = false, want true")
	}
	if s := c.Now(); s != near+1 {
		t.Errorf("Now() after observing %#x = %#x, want %#x", uint64(near), uint64(s), uint64(near+1))
	}

	// The edge: exactly MaxSkew ahead is accepted, one ms more is not.
	edge := sp.MakeStamp(clockT0.Add(sp.MaxSkew))
	if !c.Observe(edge) {
		t.Errorf("Observe(exactly MaxSkew ahead) = false, want true")
	}
	if c.Observe(edge + 1<<sp.LogicalBits) {
		t.Errorf("Observe(MaxSkew + 1 ms ahead) = true, want false")
	}
	if c.Last() != edge {
		t.Errorf("Last() = %#x, want %#x", uint64(c.Last()), uint64(edge))
	}

	// A stamp from the past is accepted and changes nothing.
	if !c.Observe(1) {
		t.Errorf("Observe(past) = false, want true")
	}
	if c.Last() != edge {
		t.Errorf("Observe(past) moved the clock to %#x, want %#x", uint64(c.Last()), uint64(edge))
	}
}

func TestClockBound(t *testing.T) {
	ft := newFakeTime(clockT0)
	server := sp.NewClock(ft.Now, 0)

	laptop := sp.MakeStamp(clockT0.Add(3*time.Hour)) | 2
	got, restamped := server.Bound(laptop)
	if !restamped {
		t.Errorf("Bound(3 h ahead) restamped = false, want true")
	}
	if got != sp.MakeStamp(clockT0) {
		t.Errorf("Bound(3 h ahead) = %#x (%v), want the server's stamp %#x", uint64(got), got.Time(), uint64(sp.MakeStamp(clockT0)))
	}
	if server.Last() != got {
		t.Errorf("after Bound, Last() = %#x, want %#x", uint64(server.Last()), uint64(got))
	}

	ok := sp.MakeStamp(clockT0.Add(10 * time.Second))
	got, restamped = server.Bound(ok)
	if restamped || got != ok {
		t.Errorf("Bound(10 s ahead) = %#x, %v, want %#x, false", uint64(got), restamped, uint64(ok))
	}
	past := sp.MakeStamp(clockT0.Add(-48 * time.Hour))
	got, restamped = server.Bound(past)
	if restamped || got != past {
		t.Errorf("Bound(2 days ago) = %#x, %v, want %#x, false: offline edits keep their stamps", uint64(got), restamped, uint64(past))
	}
}

func TestClockSetOffset(t *testing.T) {
	realTime := newFakeTime(clockT0)
	server := sp.NewClock(realTime.Now, 0)
	laptopTime := func() time.Time { return realTime.Now().Add(3 * time.Hour) } // 3 h fast
	laptop := sp.NewClock(laptopTime, 0)

	if got := laptop.Offset(); got != 0 {
		t.Errorf("Offset() = %v, want 0", got)
	}
	// Before correction the laptop's stamps are hours ahead: the server
	// refuses to follow them.
	if server.Observe(laptop.Now()) {
		t.Errorf("server.Observe(uncorrected laptop stamp) = true, want false")
	}

	// The handshake: welcome.time − local time.
	fresh := sp.NewClock(laptopTime, 0)
	offset := time.UnixMilli(server.Now().Time().UnixMilli()).Sub(laptopTime())
	fresh.SetOffset(offset)
	if got := fresh.Offset(); got != offset {
		t.Errorf("Offset() = %v, want %v", got, offset)
	}
	s := fresh.Now()
	if !s.Time().Equal(clockT0) {
		t.Errorf("corrected Now().Time() = %v, want the real time %v", s.Time(), clockT0)
	}
	realTime.Advance(time.Second)
	if s := fresh.Now(); !s.Time().Equal(clockT0.Add(time.Second)) {
		t.Errorf("corrected Now().Time() a second later = %v, want %v", s.Time(), clockT0.Add(time.Second))
	}
	if !server.Observe(fresh.Now()) {
		t.Errorf("server.Observe(corrected laptop stamp) = false, want true")
	}
	// A corrected clock judges skew by corrected time too.
	if fresh.Observe(sp.MakeStamp(realTime.Now().Add(2 * time.Hour))) {
		t.Errorf("corrected laptop Observe(2 h ahead of real time) = true, want false")
	}
	// A clock that already issued fast stamps never goes back.
	prev := laptop.Now()
	laptop.SetOffset(offset)
	if s := laptop.Now(); s <= prev {
		t.Errorf("Now() after SetOffset = %#x, want > the earlier %#x", uint64(s), uint64(prev))
	}
}

func TestClockLogicalOverflow(t *testing.T) {
	full := sp.MakeStamp(clockT0) | (1<<sp.LogicalBits - 1)
	if full.Logical() != 1<<sp.LogicalBits-1 {
		t.Fatalf("Logical() = %d, want %d", full.Logical(), 1<<sp.LogicalBits-1)
	}
	c := sp.NewClock(newFakeTime(clockT0).Now, full)
	s := c.Now()
	if s.Logical() != 0 || !s.Time().Equal(clockT0.Add(time.Millisecond)) {
		t.Errorf("Now() after a full logical counter = %v+%d, want %v+0", s.Time(), s.Logical(), clockT0.Add(time.Millisecond))
	}
	if s <= full {
		t.Errorf("Now() = %#x, want > %#x", uint64(s), uint64(full))
	}
}

func TestClockDefaultsToTimeNow(t *testing.T) {
	before := time.Now()
	s := sp.NewClock(nil, 0).Now()
	after := time.Now()
	if s < sp.MakeStamp(before) || s > sp.MakeStamp(after) {
		t.Errorf("NewClock(nil).Now() = %v, want between %v and %v", s.Time(), before, after)
	}
}
