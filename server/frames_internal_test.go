package server

import (
	"testing"

	"github.com/casesync/casesync/syncproto"
)

func TestFrameKey(t *testing.T) {
	z := syncproto.Scope{Areas: []string{"Zuilen", "Ondiep"}}
	after := map[string]uint64{"Zuilen": 5, "Ondiep": 5}
	base := newFrameKey(z, after, 9, true)
	same := []frameKey{
		newFrameKey(syncproto.Scope{Areas: []string{"Ondiep", "Zuilen"}}, after, 9, true), // order does not matter
	}
	for _, k := range same {
		if k != base {
			t.Errorf("key %q differs from %q", k.scope, base.scope)
		}
	}
	other := map[string]frameKey{
		"lead":        newFrameKey(syncproto.Scope{All: true, Areas: z.Areas}, after, 9, true),
		"fewer areas": newFrameKey(syncproto.Scope{Areas: []string{"Zuilen"}}, map[string]uint64{"Zuilen": 5}, 9, true),
		"cursor":      newFrameKey(z, map[string]uint64{"Zuilen": 5, "Ondiep": 4}, 9, true),
		"head":        newFrameKey(z, after, 10, true),
		"plain":       newFrameKey(z, after, 9, false),
		"name split":  newFrameKey(syncproto.Scope{Areas: []string{"ZuilenOndiep"}}, map[string]uint64{"ZuilenOndiep": 5}, 9, true),
		"duplicates":  newFrameKey(syncproto.Scope{Areas: []string{"Zuilen", "Ondiep", "Zuilen"}}, after, 9, true),
	}
	for name, k := range other {
		if k == base {
			t.Errorf("%s: key equals the base key %q", name, base.scope)
		}
	}
}

func TestFrameCache(t *testing.T) {
	fc := newFrameCache()
	k := newFrameKey(syncproto.Scope{Areas: []string{"A"}}, map[string]uint64{"A": 1}, 5, true)
	f, build := fc.get(k)
	if f == nil || !build {
		t.Fatalf("first get = %v, %v; want a frame to build", f, build)
	}
	g, build2 := fc.get(k)
	if g != f || build2 {
		t.Fatalf("second get = %p, %v; want the same frame to wait for", g, build2)
	}
	stop := make(chan struct{})
	close(stop)
	if g.wait(stop) {
		t.Error("wait returned true before publish")
	}
	cp := syncproto.Checkpoint{Seq: 5}
	fc.publish(f, true, false, []byte("frame"), cp)
	if !g.wait(make(chan struct{})) || !g.ok || string(g.frame) != "frame" || g.cp.Seq != 5 {
		t.Errorf("after publish: %+v", g)
	}

	// A newer head drops the older frames; an older head is not shared.
	newer := newFrameKey(syncproto.Scope{Areas: []string{"A"}}, map[string]uint64{"A": 1}, 6, true)
	if h, build := fc.get(newer); h == nil || !build {
		t.Fatalf("get of a newer head = %v, %v; want a frame to build", h, build)
	}
	if h, _ := fc.get(k); h != nil {
		t.Errorf("get of an older head = %p, want nil", h)
	}
	if len(fc.frames) != 1 {
		t.Errorf("%d frames kept, want the newer head's 1", len(fc.frames))
	}

	// Full: no more frames for this head.
	for i := range maxSharedFrames {
		fc.get(newFrameKey(syncproto.Scope{Areas: []string{"A"}}, map[string]uint64{"A": uint64(100 + i)}, 6, true))
	}
	if h, _ := fc.get(newFrameKey(syncproto.Scope{Areas: []string{"B"}}, map[string]uint64{"B": 1}, 6, true)); h != nil {
		t.Errorf("get past %d frames returned a frame", maxSharedFrames)
	}
}
