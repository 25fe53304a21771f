package e2e

import (
	"context"
	"errors"
	"testing"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	s.AddUser("chantal", "caseworker", "Ondiep")
	a, b, c := openClient(t, s, "anouk"), openClient(t, s, "bram"), openClient(t, s, "chantal")
	id, err := a.CreateCase(ctx, map[string]any{"area": "Zuilen", "title": "Mould in bedroom", "tenant": "H. Jansen"})
	if err != nil {
		t.Fatal(err)
	}
	nid, err := a.AddEntry(ctx, id, map[string]any{"kind": "visit", "text": "Visited; mould behind the wardrobe."})
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Sync(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pushed != 2 {
		t.Fatalf("pushed %d, want 2: %+v", res.Pushed, res)
	}
	if _, err := b.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	v, err := b.Get(ctx, syncproto.Key{Collection: syncproto.Entries, ID: nid})
	if err != nil {
		t.Fatal(err)
	}
	if v.String("text") != "Visited; mould behind the wardrobe." || v.Area != "Zuilen" {
		t.Fatalf("bram sees %+v", v)
	}
	if _, err := c.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Find(ctx, id); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("chantal sees the case: %v", err)
	}
	st, _ := a.Status(ctx)
	if st.Pending != 0 {
		t.Fatalf("anouk pending = %d", st.Pending)
	}
}
