package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/syncproto"
)

func TestTx_Scan(t *testing.T) {
	s := MustOpenStore(t, nil)
	// Sequences 1..9, three per area, interleaved.
	put(t, s,
		caseRecord("a1", "A"), caseRecord("b1", "B"), caseRecord("c1", "C"),
		caseRecord("b2", "B"), caseRecord("a2", "A"), caseRecord("c2", "C"),
		caseRecord("c3", "C"), caseRecord("a3", "A"), caseRecord("b3", "B"),
	)
	tests := []struct {
		name  string
		after map[string]uint64
		upTo  uint64
		want  []string
	}{
		{"All", map[string]uint64{"A": 0, "B": 0, "C": 0}, 9, []string{
			"A 1 cases/a1", "B 2 cases/b1", "C 3 cases/c1", "B 4 cases/b2", "A 5 cases/a2",
			"C 6 cases/c2", "C 7 cases/c3", "A 8 cases/a3", "B 9 cases/b3",
		}},
		{"OneArea", map[string]uint64{"B": 0}, 9, []string{"B 2 cases/b1", "B 4 cases/b2", "B 9 cases/b3"}},
		{"AfterPerArea", map[string]uint64{"A": 5, "B": 2, "C": 6}, 9, []string{
			"B 4 cases/b2", "C 7 cases/c3", "A 8 cases/a3", "B 9 cases/b3",
		}},
		{"UpTo", map[string]uint64{"A": 0, "B": 0, "C": 3}, 6, []string{
			"A 1 cases/a1", "B 2 cases/b1", "B 4 cases/b2", "A 5 cases/a2", "C 6 cases/c2",
		}},
		{"AfterUpTo", map[string]uint64{"A": 8, "B": 9}, 8, nil},
		{"UnknownArea", map[string]uint64{"Z": 0, "A": 6}, 9, []string{"A 8 cases/a3"}},
		{"None", nil, 9, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := scan(t, s, tt.after, tt.upTo); !slices.Equal(got, tt.want) {
				t.Errorf("Scan(%v, %d) = %q, want %q", tt.after, tt.upTo, got, tt.want)
			}
		})
	}
	t.Run("Stop", func(t *testing.T) {
		var n int
		mustView(t, s, func(tx server.Tx) error {
			return tx.Scan(map[string]uint64{"A": 0, "B": 0}, 9, func(server.Item) (bool, error) {
				n++
				return n < 2, nil
			})
		})
		if n != 2 {
			t.Errorf("Scan called fn %d times after it returned false, want 2", n)
		}
	})
	t.Run("ErrFromFn", func(t *testing.T) {
		errStop := errors.New("stop")
		err := s.View(context.Background(), func(tx server.Tx) error {
			return tx.Scan(map[string]uint64{"A": 0}, 9, func(server.Item) (bool, error) { return true, errStop })
		})
		if !errors.Is(err, errStop) {
			t.Errorf("Scan = %v, want the error of fn", err)
		}
	})
	t.Run("Areas", func(t *testing.T) {
		mustView(t, s, func(tx server.Tx) error {
			if got, err := tx.Areas(); err != nil || !slices.Equal(got, []string{"A", "B", "C"}) {
				t.Errorf("Areas() = %q, %v, want [A B C]", got, err)
			}
			return nil
		})
	})
}

func TestTx_PutRecord(t *testing.T) {
	all := map[string]uint64{"X": 0, "Y": 0, "Z": 0}
	t.Run("Refile", func(t *testing.T) {
		s := MustOpenStore(t, nil)
		r := caseRecord("c1", "X")
		put(t, s, r, caseRecord("c2", "X"), r, r)
		if got, want := scan(t, s, all, 4), []string{"X 2 cases/c2", "X 4 cases/c1"}; !slices.Equal(got, want) {
			t.Errorf("Scan = %q, want %q", got, want)
		}
		mustUpdate(t, s, func(tx server.Tx) error { return tx.PutRecord(r, 4) }) // same sequence again
		if got, want := scan(t, s, all, 4), []string{"X 2 cases/c2", "X 4 cases/c1"}; !slices.Equal(got, want) {
			t.Errorf("Scan after re-put at the same sequence = %q, want %q", got, want)
		}
		err := s.Update(context.Background(), func(tx server.Tx) error { return tx.PutRecord(caseRecord("c3", "X"), 2) })
		if err == nil {
			t.Error("PutRecord at a sequence filed for another record succeeded")
		}
		if err := s.Update(context.Background(), func(tx server.Tx) error { return tx.PutRecord(caseRecord("c3", ""), 5) }); err == nil {
			t.Error("PutRecord without an area succeeded")
		}
	})
	t.Run("MoveAndBack", func(t *testing.T) {
		s := MustOpenStore(t, nil)
		put(t, s, caseRecord("c1", "X"), caseRecord("c2", "X"), caseRecord("c1", "Y"))
		steps := []struct {
			name   string
			after  map[string]uint64
			want   []string
			record string // area and seq of Record(c1)
		}{
			{"X", map[string]uint64{"X": 0}, []string{"X 2 cases/c2", "X 3 cases/c1 -> Y"}, "Y 3"},
			{"Y", map[string]uint64{"Y": 0}, []string{"Y 3 cases/c1"}, "Y 3"},
			{"XAfterMove", map[string]uint64{"X": 3}, nil, "Y 3"},
		}
		check := func(t *testing.T, s *boltstore.Store, after map[string]uint64, want []string, record string) {
			t.Helper()
			if got := scan(t, s, after, 100); !slices.Equal(got, want) {
				t.Errorf("Scan(%v) = %q, want %q", after, got, want)
			}
			mustView(t, s, func(tx server.Tx) error {
				r, seq, err := tx.Record(syncproto.Key{Collection: syncproto.Cases, ID: "c1"})
				if err != nil {
					return err
				}
				if got := fmt.Sprintf("%s %d", r.Area, seq); got != record {
					t.Errorf("Record(c1) is in %s, want %s", got, record)
				}
				return nil
			})
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) { check(t, s, st.after, st.want, st.record) })
		}

		put(t, s, caseRecord("c1", "X")) // back: seq 4
		t.Run("Back", func(t *testing.T) {
			check(t, s, all, []string{"X 2 cases/c2", "X 4 cases/c1", "Y 4 cases/c1 -> X"}, "X 4")
		})
		put(t, s, caseRecord("c1", "Z")) // onwards: seq 5; Y keeps its marker
		t.Run("Onwards", func(t *testing.T) {
			check(t, s, all, []string{"X 2 cases/c2", "Y 4 cases/c1 -> X", "X 5 cases/c1 -> Z", "Z 5 cases/c1"}, "Z 5")
		})
		put(t, s, caseRecord("c1", "Y")) // to Y: seq 6 replaces Y's marker; Z gets one; X keeps its own
		t.Run("BackToOldMarker", func(t *testing.T) {
			check(t, s, all, []string{"X 2 cases/c2", "X 5 cases/c1 -> Z", "Y 6 cases/c1", "Z 6 cases/c1 -> Y"}, "Y 6")
		})
	})
}

func TestTx_CaseEntries(t *testing.T) {
	s := MustOpenStore(t, nil)
	put(t, s,
		caseRecord("c", "A"), caseRecord("c1", "A"), caseRecord("c2", "B"),
		entryRecord("e2", "c1", "A"), entryRecord("e1", "c1", "A"), entryRecord("e3", "c2", "B"),
		entryRecord("e1", "c1", "A"), // re-put: listed once
	)
	tests := []struct {
		caseID string
		want   []string
	}{
		{"c1", []string{"e1", "e2"}},
		{"c2", []string{"e3"}},
		{"c", nil}, // a prefix of c1 but not its case
		{"missing", nil},
	}
	mustView(t, s, func(tx server.Tx) error {
		for _, tt := range tests {
			if got, err := tx.CaseEntries(tt.caseID); err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("CaseEntries(%q) = %q, %v, want %q", tt.caseID, got, err, tt.want)
			}
		}
		return nil
	})
}

func TestTx_Accepted(t *testing.T) {
	s := MustOpenStore(t, nil)
	digest := []byte{1, 2, 3}
	mustUpdate(t, s, func(tx server.Tx) error {
		if err := tx.MarkAccepted("d1", 7, digest); err != nil {
			return err
		}
		return tx.MarkAccepted("d10", 7, []byte{9})
	})
	digest[0] = 42 // the store kept its own copy
	tests := []struct {
		device string
		seq    uint64
		want   []byte
		ok     bool
	}{
		{"d1", 7, []byte{1, 2, 3}, true},
		{"d10", 7, []byte{9}, true},
		{"d1", 8, nil, false},
		{"d2", 7, nil, false},
	}
	mustView(t, s, func(tx server.Tx) error {
		for _, tt := range tests {
			got, ok, err := tx.Accepted(tt.device, tt.seq)
			if err != nil || ok != tt.ok || !slices.Equal(got, tt.want) {
				t.Errorf("Accepted(%s, %d) = %v, %t, %v, want %v, %t", tt.device, tt.seq, got, ok, err, tt.want, tt.ok)
			}
		}
		return nil
	})
}

func TestTx_Conflicts(t *testing.T) {
	s := MustOpenStore(t, nil)
	k1 := syncproto.Key{Collection: syncproto.Cases, ID: "c1"}
	k2 := syncproto.Key{Collection: syncproto.Entries, ID: "e1"}
	mustUpdate(t, s, func(tx server.Tx) error {
		return errors.Join(tx.SetConflict(k1, "A", true), tx.SetConflict(k2, "B", true), tx.SetConflict(k1, "A", false))
	})
	var got []string
	mustView(t, s, func(tx server.Tx) error {
		return tx.Conflicts(func(k syncproto.Key, area string) error {
			got = append(got, k.String()+" "+area)
			return nil
		})
	})
	if want := []string{"entries/e1 B"}; !slices.Equal(got, want) {
		t.Errorf("Conflicts = %q, want %q", got, want)
	}
}

func TestTx_UsersDevices(t *testing.T) {
	s := MustOpenStore(t, nil)
	users := []server.User{
		{Name: "anouk", Role: "caseworker", Areas: []string{"A"}},
		{Name: "bram", Role: syncproto.RoleLead},
	}
	created := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	d1 := server.Device{ID: "d1", User: "anouk", Label: "laptop <1>", TokenHash: []byte("hash-1"), Created: created}
	d2 := server.Device{ID: "d2", User: "bram", TokenHash: []byte("hash-2"), Created: created}
	mustUpdate(t, s, func(tx server.Tx) error {
		return errors.Join(tx.PutUser(users[1]), tx.PutUser(users[0]), tx.PutDevice(d1), tx.PutDevice(d2))
	})
	mustView(t, s, func(tx server.Tx) error {
		if got, err := tx.Users(); err != nil || !reflect.DeepEqual(got, users) {
			t.Errorf("Users() = %+v, %v, want %+v", got, err, users)
		}
		if _, err := tx.User("nobody"); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("User(nobody) = %v, want ErrNotFound", err)
		}
		if got, err := tx.DeviceByToken([]byte("hash-1")); err != nil || !reflect.DeepEqual(got, d1) {
			t.Errorf("DeviceByToken(hash-1) = %+v, %v, want %+v", got, err, d1)
		}
		return nil
	})

	d1.TokenHash = []byte("hash-1b") // new token
	d1.Revoked = created.Add(time.Hour)
	mustUpdate(t, s, func(tx server.Tx) error { return tx.PutDevice(d1) })
	err := s.Update(context.Background(), func(tx server.Tx) error {
		d := d2
		d.TokenHash = []byte("hash-1b")
		return tx.PutDevice(d)
	})
	if err == nil {
		t.Error("PutDevice with another device's token hash succeeded")
	}
	tests := []struct {
		hash string
		want string
	}{
		{"hash-1", ""},
		{"hash-1b", "d1"},
		{"hash-2", "d2"},
		{"", ""},
	}
	mustView(t, s, func(tx server.Tx) error {
		for _, tt := range tests {
			d, err := tx.DeviceByToken([]byte(tt.hash))
			if tt.want == "" {
				if !errors.Is(err, server.ErrNotFound) {
					t.Errorf("DeviceByToken(%q) = %+v, %v, want ErrNotFound", tt.hash, d, err)
				}
			} else if err != nil || d.ID != tt.want {
				t.Errorf("DeviceByToken(%q) = %+v, %v, want %s", tt.hash, d, err, tt.want)
			}
		}
		if got, err := tx.Devices(); err != nil || !reflect.DeepEqual(got, []server.Device{d1, d2}) {
			t.Errorf("Devices() = %+v, %v, want %+v", got, err, []server.Device{d1, d2})
		}
		if _, err := tx.Device("d9"); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("Device(d9) = %v, want ErrNotFound", err)
		}
		return nil
	})
}

func TestTx_ErrReadOnly(t *testing.T) {
	s := MustOpenStore(t, nil)
	tests := map[string]func(server.Tx) error{
		"NextSeq":      func(tx server.Tx) error { _, err := tx.NextSeq(); return err },
		"PutRecord":    func(tx server.Tx) error { return tx.PutRecord(caseRecord("c1", "A"), 1) },
		"PutUser":      func(tx server.Tx) error { return tx.PutUser(server.User{Name: "u"}) },
		"MarkAccepted": func(tx server.Tx) error { return tx.MarkAccepted("d", 1, nil) },
	}
	for name, fn := range tests {
		if err := s.View(context.Background(), fn); !errors.Is(err, boltstore.ErrReadOnly) {
			t.Errorf("%s in View = %v, want ErrReadOnly", name, err)
		}
	}
}

func TestTx_ErrTxDone(t *testing.T) {
	s := MustOpenStore(t, nil)
	var leaked server.Tx
	mustUpdate(t, s, func(tx server.Tx) error { leaked = tx; return nil })
	mustUpdate(t, s, func(server.Tx) error {
		if _, err := leaked.NextSeq(); !errors.Is(err, boltstore.ErrTxDone) {
			t.Errorf("NextSeq on a finished Tx = %v, want ErrTxDone", err)
		}
		return nil
	})
}

// One view remembers the records it found absent and the area buckets it
// used; what it does after must be what a fresh view would do: a record
// stored after a miss is found, filed once, and moved with a marker left
// behind; an entry is listed under its case.
func TestTx_LookupsRememberedWithinAView(t *testing.T) {
	s := MustOpenStore(t, nil)
	k := syncproto.Key{Collection: syncproto.Entries, ID: "e1"}
	mustUpdate(t, s, func(tx server.Tx) error {
		if _, _, err := tx.Record(k); !errors.Is(err, server.ErrNotFound) {
			return fmt.Errorf("Record before put: %v, want ErrNotFound", err)
		}
		if err := tx.PutRecord(entryRecord("e1", "c1", "A"), 1); err != nil {
			return err
		}
		if _, seq, err := tx.Record(k); err != nil || seq != 1 {
			return fmt.Errorf("Record after put: seq %d, %v", seq, err)
		}
		// Stored again in the same view: not absent any more, so its old
		// filing is found and replaced, then moved to B.
		if err := tx.PutRecord(entryRecord("e1", "c1", "A"), 2); err != nil {
			return err
		}
		return tx.PutRecord(entryRecord("e1", "c1", "B"), 3)
	})
	if got, want := scan(t, s, map[string]uint64{"A": 0, "B": 0}, 3), []string{"A 3 entries/e1 -> B", "B 3 entries/e1"}; !slices.Equal(got, want) {
		t.Errorf("after the view: %q, want %q", got, want)
	}
	mustView(t, s, func(tx server.Tx) error {
		ids, err := tx.CaseEntries("c1")
		if err != nil || !slices.Equal(ids, []string{"e1"}) {
			t.Errorf("CaseEntries(c1) = %q, %v; want [e1]", ids, err)
		}
		return nil
	})
}

// The view keeps the head in memory and stores it once: what it assigned
// is kept when its function succeeds, and gone with the function's writes
// when it fails, whichever other updates share the commit.
func TestTx_HeadKeptInTheView(t *testing.T) {
	s := MustOpenStore(t, nil)
	next := func(tx server.Tx, n int) (uint64, error) {
		var seq uint64
		for range n {
			var err error
			if seq, err = tx.NextSeq(); err != nil {
				return 0, err
			}
		}
		return seq, nil
	}
	mustUpdate(t, s, func(tx server.Tx) error {
		seq, err := next(tx, 3)
		if err != nil {
			return err
		}
		if h, err := tx.Head(); err != nil || h != seq || seq != 3 {
			return fmt.Errorf("after three NextSeq: Head %d, last %d, %v; want 3", h, seq, err)
		}
		return nil
	})
	// Concurrent updates share commits; one of them fails.
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Update(context.Background(), func(tx server.Tx) error {
				if _, err := next(tx, 2); err != nil {
					return err
				}
				if i == 5 {
					return errBoom
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if want := map[bool]error{true: errBoom, false: nil}[i == 5]; !errors.Is(err, want) {
			t.Errorf("update %d: %v, want %v", i, err, want)
		}
	}
	mustView(t, s, func(tx server.Tx) error {
		if h, err := tx.Head(); err != nil || h != 3+7*2 {
			t.Errorf("Head = %d, %v; want %d", h, err, 3+7*2)
		}
		return nil
	})
}
