package syncproto_test

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sp "github.com/casesync/casesync/syncproto"
)

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ulidTime decodes the millisecond timestamp in the first 10 characters of
// a ULID.
func ulidTime(tb testing.TB, id string) time.Time {
	tb.Helper()
	var ms uint64
	for _, c := range id[:10] {
		i := strings.IndexRune(crockford, c)
		if i < 0 {
			tb.Fatalf("ID %q has a non-Crockford character %q", id, c)
		}
		ms = ms<<5 | uint64(i)
	}
	return time.UnixMilli(int64(ms)).UTC()
}

func checkULID(tb testing.TB, id string) {
	tb.Helper()
	if len(id) != 26 {
		tb.Fatalf("ID %q has %d characters, want 26", id, len(id))
	}
	for _, c := range id {
		if !strings.ContainsRune(crockford, c) {
			tb.Fatalf("ID %q has %q, not in Crockford base 32", id, c)
		}
	}
	if id[0] > '7' {
		tb.Fatalf("ID %q: the first character carries 3 bits, want 0-7", id)
	}
	if !sp.ValidID(id) {
		tb.Fatalf("ValidID(%q) = false for a generated ID", id)
	}
}

func TestNewIDShape(t *testing.T) {
	before := time.Now().Truncate(time.Millisecond)
	id := sp.NewID()
	after := time.Now()
	checkULID(t, id)
	if ts := ulidTime(t, id); ts.Before(before) || ts.After(after) {
		t.Errorf("NewID() time = %v, want between %v and %v", ts, before, after)
	}
}

func TestIDGeneratorSortsByCreationTime(t *testing.T) {
	ft := newFakeTime(clockT0)
	g := sp.NewIDGenerator(ft.Now)
	steps := []time.Duration{0, time.Millisecond, time.Second, time.Hour, 24 * 365 * time.Hour}
	var ids []string
	for _, d := range steps {
		ft.Set(clockT0.Add(d))
		id := g.New()
		checkULID(t, id)
		if got := ulidTime(t, id); !got.Equal(clockT0.Add(d)) {
			t.Errorf("ID made at %v encodes %v", clockT0.Add(d), got)
		}
		ids = append(ids, id)
	}
	if !slices.IsSorted(ids) {
		t.Errorf("IDs made in time order do not sort: %v", ids)
	}
	// IDs from different generators sort by time too.
	a := sp.NewIDGenerator(func() time.Time { return clockT0 }).New()
	b := sp.NewIDGenerator(func() time.Time { return clockT0.Add(time.Millisecond) }).New()
	if a >= b {
		t.Errorf("ID at t0 %q >= ID at t0+1ms %q", a, b)
	}
}

func TestIDGeneratorMonotonicSameMillisecond(t *testing.T) {
	g := sp.NewIDGenerator(func() time.Time { return clockT0 })
	prev := g.New()
	for i := range 10000 {
		id := g.New()
		if id <= prev {
			t.Fatalf("ID %d in the same ms = %q, want > %q", i, id, prev)
		}
		if !ulidTime(t, id).Equal(clockT0) {
			t.Fatalf("ID %q encodes %v, want %v", id, ulidTime(t, id), clockT0)
		}
		prev = id
	}
}

func TestIDGeneratorMonotonicClockStepsBack(t *testing.T) {
	ft := newFakeTime(clockT0)
	g := sp.NewIDGenerator(ft.Now)
	a := g.New()
	ft.Set(clockT0.Add(-time.Hour))
	b := g.New()
	c := g.New()
	ft.Set(clockT0.Add(-time.Millisecond))
	d := g.New()
	ft.Set(clockT0.Add(time.Millisecond))
	e := g.New()
	ids := []string{a, b, c, d, e}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("ID %d = %q, want > %q after the clock stepped back", i, ids[i], ids[i-1])
		}
	}
}

func TestNewIDUnique(t *testing.T) {
	const n = 100_000
	seen := make(map[string]bool, n)
	for range n {
		id := sp.NewID()
		if seen[id] {
			t.Fatalf("NewID() returned %q twice", id)
		}
		seen[id] = true
	}
}

func TestIDGeneratorConcurrent(t *testing.T) {
	g := sp.NewIDGenerator(func() time.Time { return clockT0 })
	const goroutines, per = 8, 1000
	out := make([][]string, goroutines)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				out[i] = append(out[i], g.New())
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, ids := range out {
		if !slices.IsSorted(ids) {
			t.Errorf("one goroutine's IDs are not increasing")
		}
		for _, id := range ids {
			if seen[id] {
				t.Fatalf("concurrent New() returned %q twice", id)
			}
			seen[id] = true
		}
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"01JGZ8Q4MX3V7K2D9R5T6W8YAB", true},
		{"case-000001", true},
		{"a", true},
		{"Z9", true},
		{"a_b-c", true},
		{"0-", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"-abc", false},
		{"_abc", false},
		{"a b", false},
		{"a.b", false},
		{"a/b", false},
		{"a,b", false},
		{"é", false},
		{"abc\n", false},
		{"abc\x00", false},
		{"case*", false},
	}
	for _, tt := range tests {
		if got := sp.ValidID(tt.in); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestValidArea(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"Zuilen", true},
		{"Lombok-Oost", true},
		{"Lombok Oost", true},
		{"Kanaleneiland (Noord)", true},
		{"Sint-Maartensdaal/Ondiep", true},
		{"Utrecht – Zuid", true},
		{"Малая Охта", true},
		{"a", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("é", 32), true}, // 64 bytes
		{"", false},
		{strings.Repeat("a", 65), false},
		{strings.Repeat("é", 32) + "a", false}, // 65 bytes
		{" Zuilen", false},
		{"Zuilen ", false},
		{" ", false},
		{"Zuilen,Lombok", false},
		{"*", false},
		{"Zui*len", false},
		{"Zuilen\n", false},
		{"Zui\tlen", false},
		{"Zui\x00len", false},
		{"Zui\x7flen", false},
		{"Zui\u0085len", false}, // NEL, a C1 control character
		{"Zui\u009blen", false}, // CSI, a C1 control character
		{"Zui\xfflen", false},   // invalid UTF-8
	}
	for _, tt := range tests {
		if got := sp.ValidArea(tt.in); got != tt.want {
			t.Errorf("ValidArea(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}
