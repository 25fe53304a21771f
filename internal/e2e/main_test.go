package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	)
}

var cheapKDF = client.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

const passphrase = "correct horse"

// testOptions: cheap KDF; fast reconnect keeps Run's backoff short so reconnect tests stay quick.
func testOptions() *client.Options {
	return &client.Options{
		Passphrase:   passphrase,
		KDF:          cheapKDF,
		ReconnectMin: 20 * time.Millisecond,
		ReconnectMax: 250 * time.Millisecond,
		DialTimeout:  5 * time.Second,
	}
}

// device is an enrolled replica and where it lives.
type device struct {
	*client.Client
	Dir string
	ID  string
}

// openDevice opens a replica in a new directory and enrolls it for user
// through baseURL (the server's URL or a proxy's). tweak adjusts options.
func openDevice(t *testing.T, s *servertest.Server, user, baseURL string, tweak func(*client.Options)) *device {
	t.Helper()
	dir := t.TempDir()
	o := testOptions()
	if tweak != nil {
		tweak(o)
	}
	c, err := client.Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	id, tok := s.Enroll(user)
	if err := c.Enroll(context.Background(), baseURL, tok); err != nil {
		t.Fatal(err)
	}
	return &device{Client: c, Dir: dir, ID: id}
}

func openClient(t *testing.T, s *servertest.Server, user string) *client.Client {
	t.Helper()
	return openDevice(t, s, user, s.URL, nil).Client
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func mustSync(t *testing.T, c *client.Client) client.SyncResult {
	t.Helper()
	res, err := c.Sync(context.Background(), nil)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

// runClient starts c.Run in the background. stop cancels it and returns
// Run's result; it is also called when the test ends.
func runClient(t *testing.T, c *client.Client) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// waitFor re-checks cond whenever c publishes an event, and at least every
// 25 ms, until it holds or the deadline passes.
func waitFor(t *testing.T, c *client.Client, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	events, cancel := c.Subscribe()
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var lastErr error
	for {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		select {
		case <-events:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, lastErr)
		}
	}
}

func status(t *testing.T, c *client.Client) client.Status {
	t.Helper()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func caseKey(id string) syncproto.Key  { return syncproto.Key{Collection: syncproto.Cases, ID: id} }
func entryKey(id string) syncproto.Key { return syncproto.Key{Collection: syncproto.Entries, ID: id} }

func mustGet(t *testing.T, c *client.Client, k syncproto.Key) *client.View {
	t.Helper()
	v, err := c.Get(context.Background(), k)
	if err != nil {
		t.Fatalf("get %s: %v", k, err)
	}
	return v
}

func mustCreateCase(t *testing.T, c *client.Client, fields map[string]any) string {
	t.Helper()
	id, err := c.CreateCase(context.Background(), fields)
	if err != nil {
		t.Fatalf("create case: %v", err)
	}
	return id
}

func mustAddEntry(t *testing.T, c *client.Client, caseID, text string) string {
	t.Helper()
	id, err := c.AddEntry(context.Background(), caseID, map[string]any{"kind": syncproto.KindNote, "text": text})
	if err != nil {
		t.Fatalf("add entry: %v", err)
	}
	return id
}

func mustNotFind(t *testing.T, c *client.Client, id, what string) {
	t.Helper()
	v, err := c.Find(context.Background(), id)
	switch {
	case err == nil:
		t.Errorf("%s %s: still on the device (area %q, text %q, pending %v); want ErrNotFound", what, id, v.Area, v.String(syncproto.FieldText), v.Pending)
	case !errors.Is(err, client.ErrNotFound):
		t.Errorf("%s %s: Find: %v; want ErrNotFound", what, id, err)
	}
}

// serverRecord reads a record from the server's store.
func serverRecord(t *testing.T, s *servertest.Server, k syncproto.Key) (*syncproto.Record, bool) {
	t.Helper()
	var rec *syncproto.Record
	err := s.Store.View(context.Background(), func(tx server.Tx) error {
		r, _, err := tx.Record(k)
		if errors.Is(err, server.ErrNotFound) {
			return nil
		}
		rec = r
		return err
	})
	if err != nil {
		t.Fatalf("server view: %v", err)
	}
	return rec, rec != nil
}

// serverEntries returns the entries of a case in the server's store.
func serverEntries(t *testing.T, s *servertest.Server, caseID string) []*syncproto.Record {
	t.Helper()
	var out []*syncproto.Record
	err := s.Store.View(context.Background(), func(tx server.Tx) error {
		ids, err := tx.CaseEntries(caseID)
		if err != nil {
			return err
		}
		for _, id := range ids {
			r, _, err := tx.Record(entryKey(id))
			if err != nil {
				return fmt.Errorf("entry %s: %w", id, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("server view: %v", err)
	}
	return out
}

// serverScanEntries counts, over the whole log as the server would stream
// it, the entry states it holds per text: a note stored twice under two IDs
// shows up as a count of 2.
func serverScanEntries(t *testing.T, s *servertest.Server) map[string]int {
	t.Helper()
	counts := map[string]int{}
	err := s.Store.View(context.Background(), func(tx server.Tx) error {
		head, err := tx.Head()
		if err != nil {
			return err
		}
		areas, err := tx.Areas()
		if err != nil {
			return err
		}
		after := map[string]uint64{}
		for _, a := range areas {
			after[a] = 0
		}
		seen := map[syncproto.Key]bool{}
		return tx.Scan(after, head, func(it server.Item) (bool, error) {
			if it.Record == nil || it.Key.Collection != syncproto.Entries || seen[it.Key] {
				return true, nil
			}
			seen[it.Key] = true
			text, _ := it.Record.String(syncproto.FieldText)
			counts[text]++
			return true, nil
		})
	})
	if err != nil {
		t.Fatalf("server scan: %v", err)
	}
	return counts
}

// summary is what a person sees of a record, for comparing devices: the
// fields' winning values, the conflicts and the tombstone.
func summary(t *testing.T, v *client.View) string {
	t.Helper()
	b, err := json.Marshal(struct {
		Area      string
		Fields    map[string]json.RawMessage
		Conflicts []syncproto.Conflict
		Deleted   bool
	}{v.Area, v.Fields, v.Conflicts, v.Deleted})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// conflictValues returns the values of field's conflict in v, sorted, or
// nil if the field has none.
func conflictValues(v *client.View, field string) []string {
	for _, c := range v.Conflicts {
		if c.Field == field {
			var out []string
			for _, val := range c.Values {
				out = append(out, string(val.Data))
			}
			slices.Sort(out)
			return out
		}
	}
	return nil
}
