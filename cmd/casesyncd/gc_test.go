package main

import "testing"

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"384MiB", 384 << 20, true},
		{"1GiB", 1 << 30, true},
		{"64KiB", 64 << 10, true},
		{"500000000", 500000000, true},
		{"off", 1<<63 - 1, true},
		{"", 0, false},
		{"0", 0, false},
		{"-5MiB", 0, false},
		{"12MB", 0, false},
		{"MiB", 0, false},
		{"9999999999GiB", 0, false},
	} {
		got, err := parseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if err := applyGC(-3, ""); err == nil {
		t.Error("applyGC(-3) accepted a negative percentage other than -1")
	}
}
