package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
	"github.com/casesync/casesync/syncproto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// MustOpenStore opens a store in a new temporary directory and closes it
// when the test ends.
func MustOpenStore(tb testing.TB, opts *boltstore.Options) *boltstore.Store {
	tb.Helper()
	s, err := boltstore.Open(filepath.Join(tb.TempDir(), "casesync.db"), opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// record returns a record whose fields hold the given values, each written
// by device d1. Values are JSON strings built by strconv.Quote, which does
// not escape <, > and &, so a round trip shows whether the store does.
func record(coll syncproto.Collection, id, area string, fields map[string]string) *syncproto.Record {
	r := &syncproto.Record{Collection: coll, ID: id, Area: area, Fields: map[string]syncproto.Field{}}
	for name, val := range fields {
		r.Fields[name] = syncproto.Field{
			Values: []syncproto.Value{{Device: "d1", Seq: 1, Stamp: 1 << 16, Data: []byte(strconv.Quote(val))}},
			Seen:   syncproto.Versions{"d1": 1},
		}
	}
	return r
}

func caseRecord(id, area string) *syncproto.Record {
	return record(syncproto.Cases, id, area, map[string]string{syncproto.FieldTitle: "Leak <kitchen> & hall", syncproto.FieldArea: area})
}

func entryRecord(id, caseID, area string) *syncproto.Record {
	return record(syncproto.Entries, id, area, map[string]string{syncproto.FieldCaseID: caseID, syncproto.FieldText: "visit " + id})
}

func mustUpdate(tb testing.TB, s *boltstore.Store, fn func(server.Tx) error) {
	tb.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		tb.Fatalf("Update: %v", err)
	}
}

func mustView(tb testing.TB, s *boltstore.Store, fn func(server.Tx) error) {
	tb.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		tb.Fatalf("View: %v", err)
	}
}

// put files each record at a new sequence, one Update each, and returns
// the sequences.
func put(tb testing.TB, s *boltstore.Store, recs ...*syncproto.Record) []uint64 {
	tb.Helper()
	var seqs []uint64
	for _, r := range recs {
		mustUpdate(tb, s, func(tx server.Tx) error {
			seq, err := tx.NextSeq()
			if err != nil {
				return err
			}
			seqs = append(seqs, seq)
			return tx.PutRecord(r, seq)
		})
	}
	return seqs
}

// scan returns the items of a Scan as "area seq key" or "area seq key ->
// dest" for markers, checking that each record item is the current state.
func scan(tb testing.TB, s *boltstore.Store, after map[string]uint64, upTo uint64) []string {
	tb.Helper()
	var out []string
	mustView(tb, s, func(tx server.Tx) error {
		return tx.Scan(after, upTo, func(it server.Item) (bool, error) {
			if it.Record == nil {
				out = append(out, fmt.Sprintf("%s %d %s -> %s", it.Area, it.Seq, it.Key, it.MovedTo))
				return true, nil
			}
			if it.Record.Key() != it.Key || it.Record.Area != it.Area || it.MovedTo != "" {
				tb.Errorf("Scan item %+v: record %s in area %q", it, it.Record.Key(), it.Record.Area)
			}
			out = append(out, fmt.Sprintf("%s %d %s", it.Area, it.Seq, it.Key))
			return true, nil
		})
	})
	return out
}

func TestOpen_Reopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "casesync.db")
	s, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	meta := s.Meta()
	if len(meta.ServerID) != 16 || len(meta.Epoch) != 16 || meta.ServerID == meta.Epoch {
		t.Errorf("Meta() = %+v, want two different 16-character IDs", meta)
	}
	want := caseRecord("c1", "north")
	user := server.User{Name: "anouk", Role: "caseworker", Areas: []string{"north"}}
	put(t, s, want)
	mustUpdate(t, s, func(tx server.Tx) error {
		if err := tx.AppendLog(1, server.LogEntry{Device: "d1", User: "anouk", Area: "north"}); err != nil {
			return err
		}
		return tx.PutUser(user)
	})
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("Stat(%s) = %v, %v, want mode 0600", path, fi.Mode(), err)
	}

	s, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got := s.Meta(); got != meta {
		t.Errorf("Meta() after reopen = %+v, want %+v", got, meta)
	}
	mustView(t, s, func(tx server.Tx) error {
		if head, err := tx.Head(); head != 1 || err != nil {
			t.Errorf("Head() = %d, %v, want 1", head, err)
		}
		got, seq, err := tx.Record(want.Key())
		if err != nil || seq != 1 || !reflect.DeepEqual(got, want) {
			t.Errorf("Record() = %+v, %d, %v, want %+v, 1", got, seq, err, want)
		}
		if u, err := tx.User("anouk"); err != nil || !reflect.DeepEqual(u, user) {
			t.Errorf("User() = %+v, %v, want %+v", u, err, user)
		}
		return nil
	})

	other := MustOpenStore(t, nil)
	if other.Meta() == meta {
		t.Errorf("two stores share Meta %+v", meta)
	}
}

func TestOpen_ErrLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "casesync.db")
	s, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := boltstore.Open(path, &boltstore.Options{Timeout: 10 * time.Millisecond}); !errors.Is(err, boltstore.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	} else {
		t.Logf("second Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

func TestOpen_ErrCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "casesync.db")
	s, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s.Close()
	// Keep the two meta pages, overwrite every other page: bbolt panics
	// reading the freelist.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := os.Getpagesize()
	for i := 2 * pageSize; i < len(data); i++ {
		data[i] = 0xff
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 { // twice: a failed Open must not leave the file locked
		_, err := boltstore.Open(path, &boltstore.Options{Timeout: 10 * time.Millisecond})
		if err == nil || errors.Is(err, boltstore.ErrLocked) {
			t.Fatalf("Open of a corrupt file = %v, want an error other than ErrLocked", err)
		}
		t.Logf("Open of a corrupt file: %v", err)
	}

	garbage := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(garbage, []byte("not a database, not even close to one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := boltstore.Open(garbage, nil); err == nil {
		t.Fatal("Open of a garbage file succeeded")
	}
}

// gate blocks the writer: Update with the returned fn's function holds it
// until release is called.
func gate(t *testing.T, s *boltstore.Store) (release func(), done <-chan error) {
	t.Helper()
	entered, open := make(chan struct{}), make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.Update(context.Background(), func(server.Tx) error {
			close(entered)
			<-open
			return nil
		})
	}()
	<-entered
	return func() { close(open) }, errc
}

func TestStore_GroupCommit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := MustOpenStore(t, nil)
		release, gated := gate(t, s)
		const n = 64
		var (
			wg   sync.WaitGroup
			seqs [n]uint64
			errs [n]error
		)
		for i := range n {
			wg.Go(func() {
				errs[i] = s.Update(context.Background(), func(tx server.Tx) error {
					seq, err := tx.NextSeq()
					if err != nil {
						return err
					}
					seqs[i] = seq
					return tx.PutRecord(caseRecord(fmt.Sprint("c", i), fmt.Sprint("area", i%4)), seq)
				})
			})
		}
		synctest.Wait() // all 64 queued behind the gate
		if q := s.Stats().Queued; q != n {
			t.Errorf("Stats().Queued = %d, want %d", q, n)
		}
		release()
		wg.Wait()
		if err := <-gated; err != nil {
			t.Fatalf("gate Update: %v", err)
		}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Update %d: %v", i, err)
			}
		}
		sorted := slices.Sorted(slices.Values(seqs[:]))
		for i, seq := range sorted {
			if seq != uint64(i+1) {
				t.Fatalf("sequences = %v, want 1..%d each once", sorted, n)
			}
		}
		st := s.Stats()
		t.Logf("Stats() = %+v", st)
		if st.Updates != n+1 || st.Commits >= st.Updates {
			t.Errorf("Stats() = %+v, want %d updates in fewer commits", st, n+1)
		}
		all := map[string]uint64{"area0": 0, "area1": 0, "area2": 0, "area3": 0}
		if got := scan(t, s, all, n); len(got) != n {
			t.Errorf("Scan found %d records, want %d", len(got), n)
		}
	})
}

// TestStore_Concurrent runs updates and scans on real schedules, for the
// race detector; TestStore_GroupCommit pins the batching down.
func TestStore_Concurrent(t *testing.T) {
	s := MustOpenStore(t, nil)
	const writers, readers = 64, 4
	var (
		wg   sync.WaitGroup
		seqs [writers]uint64
	)
	for i := range writers {
		wg.Go(func() {
			err := s.Update(context.Background(), func(tx server.Tx) error {
				seq, err := tx.NextSeq()
				if err != nil {
					return err
				}
				seqs[i] = seq
				return tx.PutRecord(caseRecord(fmt.Sprint("c", i), fmt.Sprint("area", i%4)), seq)
			})
			if err != nil {
				t.Errorf("Update %d: %v", i, err)
			}
		})
	}
	for range readers {
		wg.Go(func() {
			err := s.View(context.Background(), func(tx server.Tx) error {
				head, err := tx.Head()
				if err != nil {
					return err
				}
				n := 0
				err = tx.Scan(map[string]uint64{"area0": 0, "area1": 0, "area2": 0, "area3": 0}, head, func(server.Item) (bool, error) {
					n++
					return true, nil
				})
				if err == nil && uint64(n) != head {
					t.Errorf("Scan up to head %d in a snapshot found %d items", head, n)
				}
				return err
			})
			if err != nil {
				t.Errorf("View: %v", err)
			}
		})
	}
	wg.Wait()
	sorted := slices.Sorted(slices.Values(seqs[:]))
	for i, seq := range sorted {
		if seq != uint64(i+1) {
			t.Fatalf("sequences = %v, want 1..%d each once", sorted, writers)
		}
	}
	t.Logf("Stats() = %+v", s.Stats())
}

func TestStore_UpdateError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := MustOpenStore(t, nil)
		errBad := errors.New("bad change")
		release, gated := gate(t, s)
		var (
			wg      sync.WaitGroup
			badErr  error
			badRuns atomic.Int32
			goodErr [8]error
		)
		wg.Go(func() {
			badErr = s.Update(context.Background(), func(tx server.Tx) error {
				badRuns.Add(1)
				seq, err := tx.NextSeq()
				if err != nil {
					return err
				}
				if err := tx.PutRecord(caseRecord("bad", "A"), seq); err != nil {
					return err
				}
				return errBad
			})
		})
		for i := range goodErr {
			wg.Go(func() {
				goodErr[i] = s.Update(context.Background(), func(tx server.Tx) error {
					seq, err := tx.NextSeq()
					if err != nil {
						return err
					}
					return tx.PutRecord(caseRecord(fmt.Sprint("good", i), "A"), seq)
				})
			})
		}
		synctest.Wait()
		release()
		wg.Wait()
		<-gated
		if !errors.Is(badErr, errBad) {
			t.Errorf("failing Update = %v, want its own error", badErr)
		}
		if badRuns.Load() < 2 {
			t.Errorf("failing function ran %d times, want at least 2 (batch, then alone)", badRuns.Load())
		}
		for i, err := range goodErr {
			if err != nil {
				t.Errorf("good Update %d = %v", i, err)
			}
		}
		mustView(t, s, func(tx server.Tx) error {
			if _, _, err := tx.Record(syncproto.Key{Collection: syncproto.Cases, ID: "bad"}); !errors.Is(err, server.ErrNotFound) {
				t.Errorf("Record(bad) = %v, want ErrNotFound", err)
			}
			if head, _ := tx.Head(); head != uint64(len(goodErr)) {
				t.Errorf("Head() = %d, want %d: the failed update's NextSeq was kept", head, len(goodErr))
			}
			return nil
		})
		if st := s.Stats(); st.Rollbacks == 0 {
			t.Errorf("Stats() = %+v, want a rollback", st)
		}
	})
}

func TestStore_UpdatePanic(t *testing.T) {
	s := MustOpenStore(t, nil)
	err := s.Update(context.Background(), func(tx server.Tx) error {
		if err := tx.PutUser(server.User{Name: "ghost"}); err != nil {
			return err
		}
		panic("boom")
	})
	if !errors.Is(err, boltstore.ErrPanicked) {
		t.Fatalf("Update with a panicking function = %v, want ErrPanicked", err)
	}
	put(t, s, caseRecord("c1", "A")) // the writer still works
	mustView(t, s, func(tx server.Tx) error {
		if _, err := tx.User("ghost"); !errors.Is(err, server.ErrNotFound) {
			t.Errorf("User(ghost) = %v, want ErrNotFound", err)
		}
		return nil
	})
}

func TestStore_UpdateCancelled(t *testing.T) {
	t.Run("Before", func(t *testing.T) {
		s := MustOpenStore(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ran := false
		if err := s.Update(ctx, func(server.Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
			t.Errorf("Update with a cancelled ctx = %v (ran %t), want context.Canceled without running", err, ran)
		}
	})
	t.Run("Queued", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := MustOpenStore(t, nil)
			release, gated := gate(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			var ran atomic.Bool
			errc := make(chan error, 1)
			go func() {
				errc <- s.Update(ctx, func(tx server.Tx) error {
					ran.Store(true)
					return tx.PutUser(server.User{Name: "late"})
				})
			}()
			synctest.Wait() // queued behind the gate
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("queued Update after cancel = %v, want context.Canceled", err)
			}
			release()
			<-gated
			put(t, s, caseRecord("c1", "A")) // the writer has passed the cancelled request
			if ran.Load() {
				t.Error("function of a cancelled queued Update ran")
			}
		})
	})
	t.Run("AfterStart", func(t *testing.T) {
		s := MustOpenStore(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err := s.Update(ctx, func(tx server.Tx) error {
			cancel()
			return tx.PutUser(server.User{Name: "kept"})
		})
		if err != nil {
			t.Fatalf("Update whose ctx ended after fn started = %v, want nil", err)
		}
		mustView(t, s, func(tx server.Tx) error {
			_, err := tx.User("kept")
			return err
		})
	})
}

func TestStore_Close(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "casesync.db")
		s, err := boltstore.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		release, gated := gate(t, s)
		const n = 10
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if err := s.Update(context.Background(), func(tx server.Tx) error {
					return tx.PutUser(server.User{Name: fmt.Sprint("u", i)})
				}); err != nil {
					t.Errorf("queued Update: %v", err)
				}
			})
		}
		synctest.Wait()
		closed := make(chan error, 1)
		go func() { closed <- s.Close() }()
		synctest.Wait() // Close waits for the queue
		release()
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		wg.Wait()
		<-gated
		if err := s.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
		if err := s.Update(context.Background(), func(server.Tx) error { return nil }); !errors.Is(err, boltstore.ErrClosed) {
			t.Errorf("Update after Close = %v, want ErrClosed", err)
		}
		if err := s.View(context.Background(), func(server.Tx) error { return nil }); !errors.Is(err, boltstore.ErrClosed) {
			t.Errorf("View after Close = %v, want ErrClosed", err)
		}

		s, err = boltstore.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		mustView(t, s, func(tx server.Tx) error {
			if users, err := tx.Users(); err != nil || len(users) != n {
				t.Errorf("Users() after reopen = %d users, %v, want %d", len(users), err, n)
			}
			return nil
		})
	})
}

func BenchmarkUpdate(b *testing.B) {
	s := MustOpenStore(b, nil)
	var id atomic.Int64
	b.SetParallelism(4) // 4×GOMAXPROCS concurrent callers, like many devices pushing
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := caseRecord(fmt.Sprint("c", id.Add(1)), "A")
			if err := s.Update(context.Background(), func(tx server.Tx) error {
				seq, err := tx.NextSeq()
				if err != nil {
					return err
				}
				return tx.PutRecord(r, seq)
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	st := s.Stats()
	b.ReportMetric(float64(st.Updates)/float64(st.Commits), "updates/commit")
}

func BenchmarkPutRecord(b *testing.B) {
	s := MustOpenStore(b, nil)
	const perTx = 1000
	recs := make([]*syncproto.Record, perTx)
	for i := range recs {
		recs[i] = entryRecord(fmt.Sprintf("e%06d", i), fmt.Sprint("c", i%50), fmt.Sprint("area", i%12))
	}
	b.ResetTimer()
	for b.Loop() {
		mustUpdate(b, s, func(tx server.Tx) error {
			for _, r := range recs {
				seq, err := tx.NextSeq()
				if err != nil {
					return err
				}
				if err := tx.PutRecord(r, seq); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.ReportMetric(float64(b.N*perTx)/b.Elapsed().Seconds(), "records/s")
}
