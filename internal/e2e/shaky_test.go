package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// Scenario 2: office hours on shaky wifi. The caseworker's laptop syncs
// through a proxy that cuts every connection every few hundred
// milliseconds while she captures 200 notes; she keeps syncing until her
// outbox is empty. Every note must be on the server exactly once, and none
// may be rejected.
func TestShakyWifi(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("lotte", "lead")
	p := newProxy(t, s.Addr)
	// Small pushes and a per-chunk delay stretch each session over many
	// round trips, so the cuts land mid-push and mid-pull.
	a := openDevice(t, s, "anouk", p.URL(), func(o *client.Options) { o.PushBatch = 7 })
	lead := openClient(t, s, "lotte")

	caseID := mustCreateCase(t, a.Client, map[string]any{"area": "Zuilen", "title": "Office hours, Zuilen"})
	mustSync(t, a.Client)

	p.SetDelay(time.Millisecond)
	stopCutting := p.CutEvery(250 * time.Millisecond)
	defer stopCutting()

	const n = 200
	text := func(i int) string { return fmt.Sprintf("office hours note %03d", i) }
	writeErr := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := a.AddEntry(ctx, caseID, map[string]any{"kind": syncproto.KindOfficeHours, "text": text(i)}); err != nil {
				writeErr <- fmt.Errorf("note %d: %w", i, err)
				return
			}
		}
		writeErr <- nil
	}()

	deadline := time.Now().Add(45 * time.Second)
	writing := true
	var syncs, failed int
	for {
		_, err := a.Sync(ctx, nil)
		syncs++
		if err != nil {
			failed++
			if !errors.Is(err, client.ErrUnreachable) {
				t.Errorf("sync %d: %v; a dropped connection must be ErrUnreachable", syncs, err)
			}
		}
		if writing {
			select {
			case werr := <-writeErr:
				if werr != nil {
					t.Fatal(werr)
				}
				writing = false
			default:
			}
		}
		if !writing && err == nil && status(t, a.Client).Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox not empty after %d syncs (%d failed): %+v", syncs, failed, status(t, a.Client))
		}
	}
	stopCutting()
	t.Logf("%d syncs, %d interrupted, %d connections, %d cut", syncs, failed, p.Accepted(), p.Cuts())
	if p.Cuts() == 0 || failed == 0 {
		t.Fatalf("the proxy never interrupted a sync (%d cuts, %d failed syncs): the test injected no fault", p.Cuts(), failed)
	}

	st := status(t, a.Client)
	if st.Pending != 0 || st.Rejected != 0 {
		t.Errorf("caseworker status after syncing: %+v", st)
	}
	if rej, err := a.Rejected(ctx); err != nil || len(rej) != 0 {
		t.Errorf("rejected = %+v, %v; want none", rej, err)
	}

	want := map[string]bool{}
	for i := range n {
		want[text(i)] = true
	}
	checkOnce := func(who string, texts []string) {
		t.Helper()
		count := map[string]int{}
		for _, x := range texts {
			count[x]++
		}
		for x := range want {
			if count[x] != 1 {
				t.Errorf("%s: note %q present %d times, want exactly once", who, x, count[x])
			}
		}
		if len(texts) != n {
			t.Errorf("%s: %d notes, want %d", who, len(texts), n)
		}
	}

	// The server's store: the case's journal, and the whole log as streamed.
	var srvTexts []string
	for _, r := range serverEntries(t, s, caseID) {
		x, _ := r.String(syncproto.FieldText)
		srvTexts = append(srvTexts, x)
		if r.Area != "Zuilen" {
			t.Errorf("server files entry %s under %q", r.ID, r.Area)
		}
	}
	checkOnce("server store", srvTexts)
	for x, c := range serverScanEntries(t, s) {
		if c != 1 {
			t.Errorf("server log scan: %q appears under %d records", x, c)
		}
	}

	// A lead pulling from scratch, and the caseworker's own replica.
	mustSync(t, lead)
	for who, c := range map[string]*client.Client{"lead": lead, "caseworker": a.Client} {
		entries, err := c.Entries(ctx, caseID)
		if err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, e := range entries {
			texts = append(texts, e.String(syncproto.FieldText))
			if e.Pending {
				t.Errorf("%s: entry %s still pending", who, e.ID)
			}
		}
		checkOnce(who, texts)
	}
}

// The same office hours with the laptop in Run mode: the live session is
// cut every 250 ms and Run reconnects by itself while 200 notes are
// captured; once the outbox is empty every note is on the server exactly
// once.
func TestShakyWifiRun(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	p := newProxy(t, s.Addr)
	a := openDevice(t, s, "anouk", p.URL(), func(o *client.Options) { o.PushBatch = 7 })
	caseID := mustCreateCase(t, a.Client, map[string]any{"area": "Zuilen", "title": "Office hours, live"})
	mustSync(t, a.Client)

	p.SetDelay(time.Millisecond)
	stopCutting := p.CutEvery(250 * time.Millisecond)
	defer stopCutting()
	stop := runClient(t, a.Client)

	const n = 200
	text := func(i int) string { return fmt.Sprintf("live note %03d", i) }
	for i := range n {
		if _, err := a.AddEntry(ctx, caseID, map[string]any{"kind": syncproto.KindOfficeHours, "text": text(i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, a.Client, 45*time.Second, "an empty outbox", func() (bool, error) {
		return status(t, a.Client).Pending == 0, nil
	})
	stopCutting()
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	t.Logf("%d connections, %d cut", p.Accepted(), p.Cuts())
	if p.Cuts() == 0 || p.Accepted() < 2 {
		t.Fatalf("no fault injected: %d connections, %d cuts", p.Accepted(), p.Cuts())
	}
	if rej, _ := a.Rejected(ctx); len(rej) != 0 {
		t.Errorf("rejected: %+v", rej)
	}
	count := map[string]int{}
	for _, r := range serverEntries(t, s, caseID) {
		x, _ := r.String(syncproto.FieldText)
		count[x]++
	}
	for i := range n {
		if count[text(i)] != 1 {
			t.Errorf("server holds %q %d times, want once", text(i), count[text(i)])
		}
	}
	if len(count) != n {
		t.Errorf("server holds %d distinct notes, want %d", len(count), n)
	}
}
