package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/casesync/casesync/syncproto"
)

// conflictedCase is a case whose tenant field holds two concurrent values.
func conflictedCase(id string) *syncproto.Record {
	r := caseRecord(id, "Zuilen", "A. Visser")
	other := field("dev2", 1, "A. Fisser")
	f := r.Fields[syncproto.FieldTenant]
	r.Join(&syncproto.Record{Collection: r.Collection, ID: id, Fields: map[string]syncproto.Field{syncproto.FieldTenant: other}})
	if !r.Fields[syncproto.FieldTenant].Conflicted() {
		panic(fmt.Sprintf("fixture is not conflicted: %+v joined %+v", f, other))
	}
	return r
}

// scanConflicts is the index's reference: every visible record, decoded.
func scanConflicts(t *testing.T, tx *stx, m Meta) []syncproto.Key {
	t.Helper()
	all, err := allVisible(tx, m)
	if err != nil {
		t.Fatal(err)
	}
	var out []syncproto.Key
	for _, r := range all {
		if len(r.Conflicts()) > 0 {
			out = append(out, r.Key())
		}
	}
	return out
}

func indexConflicts(t *testing.T, c *Client, tx *stx, m Meta) []syncproto.Key {
	t.Helper()
	cs, err := c.conflicts(tx, m)
	if err != nil {
		t.Fatal(err)
	}
	var out []syncproto.Key
	for _, rc := range cs {
		out = append(out, rc.Key)
	}
	return out
}

func TestConflictIndex(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	c := &Client{}
	m := sampleMeta("t", "Zuilen")
	key := func(id string) syncproto.Key { return syncproto.Key{Collection: syncproto.Cases, ID: id} }
	pendingRemote := caseRecord("C4", "Zuilen", "remote")
	pendingRemote.Fields[syncproto.FieldTenant] = field("dev2", 5, "remote")

	steps := []struct {
		name string
		fn   func(tx *stx) error
		want []string
	}{
		{"empty store", func(tx *stx) error { return tx.putMeta(m) }, nil},
		{"a clean record", func(tx *stx) error { return tx.putRecord(caseRecord("C1", "Zuilen", "x")) }, nil},
		{"two conflicted", func(tx *stx) error {
			return errors.Join(tx.putRecord(conflictedCase("C2")), tx.putRecord(conflictedCase("C3")))
		}, []string{"C2", "C3"}},
		{"one resolved by a newer confirmed state", func(tx *stx) error { return tx.putRecord(caseRecord("C2", "Zuilen", "y")) }, []string{"C3"}},
		{"one deleted", func(tx *stx) error { return tx.deleteRecord(key("C3")) }, nil},
		{"a pending local edit concurrent with a confirmed remote one", func(tx *stx) error {
			// The local edit saw nothing of dev2's value: joined, they conflict,
			// though neither the confirmed state nor the change alone does.
			ch := syncproto.Edit(nil, syncproto.Cases, "C4", 1, syncproto.MakeStamp(t0), map[string]json.RawMessage{syncproto.FieldTenant: str("local")})
			return errors.Join(tx.putRecord(pendingRemote), tx.appendOutbox(ch))
		}, []string{"C4"}},
		{"an evicted record is not shown", func(tx *stx) error {
			return errors.Join(tx.putRecord(conflictedCase("C5")), tx.deleteRecord(key("C5")), tx.markEvicted(key("C5")))
		}, []string{"C4"}},
	}
	for _, st := range steps {
		mustUpdate(t, s, st.fn)
		var want []syncproto.Key
		for _, id := range st.want {
			want = append(want, key(id))
		}
		mustView(t, s, func(tx *stx) error {
			if got := indexConflicts(t, c, tx, m); !slices.Equal(got, want) {
				t.Errorf("%s: conflicts from the index = %v, want %v", st.name, got, want)
			}
			if got := scanConflicts(t, tx, m); !slices.Equal(got, want) {
				t.Errorf("%s: conflicts from a full scan = %v, want %v (the fixture is wrong)", st.name, got, want)
			}
			return nil
		})
	}

	// A store written before the index existed has no index value: it is
	// rebuilt from the records on first use and saved by the next update.
	mustUpdate(t, s, func(tx *stx) error { return tx.putRecord(conflictedCase("C6")) })
	mustUpdate(t, s, func(tx *stx) error { return tx.del(bucketMeta, conflictsKey) })
	mustView(t, s, func(tx *stx) error {
		if ok, _ := tx.get(bucketMeta, conflictsKey, nil); ok {
			t.Fatal("the index value was not removed")
		}
		if got, want := indexConflicts(t, c, tx, m), []syncproto.Key{key("C4"), key("C6")}; !slices.Equal(got, want) {
			t.Errorf("rebuilt index: %v, want %v", got, want)
		}
		return nil
	})
	mustUpdate(t, s, func(tx *stx) error { return tx.putRecord(caseRecord("C1", "Zuilen", "z")) })
	mustView(t, s, func(tx *stx) error {
		var list []syncproto.Key
		if ok, err := tx.get(bucketMeta, conflictsKey, &list); !ok || err != nil {
			t.Fatalf("index not saved by the update: %v %v", ok, err)
		}
		if want := []syncproto.Key{key("C6")}; !slices.Equal(list, want) {
			t.Errorf("saved index %v, want %v (C4's conflict comes from its pending change, not the index)", list, want)
		}
		return nil
	})
}

func TestPendingKeys(t *testing.T) {
	s := openTest(t, storePath(t), passKS("pw"))
	ka := syncproto.Key{Collection: syncproto.Cases, ID: "A"}
	kb := syncproto.Key{Collection: syncproto.Cases, ID: "A-1"}
	ke := syncproto.Key{Collection: syncproto.Entries, ID: "A"}
	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.appendOutbox(change(3, ka.Collection, ka.ID, "x")), tx.appendOutbox(change(1, kb.Collection, kb.ID, "y")),
			tx.appendOutbox(change(2, ka.Collection, ka.ID, "z")), tx.appendOutbox(change(4, ke.Collection, ke.ID, "w")))
	})
	mustView(t, s, func(tx *stx) error {
		got, err := tx.pendingKeys()
		if want := []syncproto.Key{ka, kb, ke}; err != nil || !slices.Equal(got, want) {
			t.Errorf("pendingKeys = %v, %v; want %v", got, err, want)
		}
		for _, tc := range []struct {
			k    syncproto.Key
			want bool
		}{{ka, true}, {kb, true}, {ke, true}, {syncproto.Key{Collection: syncproto.Cases, ID: "A-"}, false}, {syncproto.Key{Collection: syncproto.Entries, ID: "B"}, false}} {
			if got, err := tx.hasPending(tc.k); err != nil || got != tc.want {
				t.Errorf("hasPending(%s) = %v, %v; want %v", tc.k, got, err, tc.want)
			}
		}
		return nil
	})
	// Removing a change under the wrong record is damage, and removes nothing.
	if err := s.update(func(tx *stx) error { return tx.removeOutbox(3, kb) }); err == nil {
		t.Error("removeOutbox(3) under another record's key succeeded")
	}
	mustView(t, s, func(tx *stx) error {
		if n, _ := tx.outboxLen(); n != 4 {
			t.Errorf("outbox holds %d changes after a refused removal, want 4", n)
		}
		return nil
	})
}
