package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// Opening with the wrong passphrase fails with ErrWrongPassphrase and
// leaves the store file byte for byte as it was; the right one still
// opens it with everything in it.
func TestOpenWrongPassphrase(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	d := openDevice(t, s, "anouk", s.URL, nil)
	caseID := mustCreateCase(t, d.Client, map[string]any{"area": "Zuilen", "title": "Locked away"})
	mustAddEntry(t, d.Client, caseID, "Pending note.")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.Dir, client.StoreFile)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi0, _ := os.Stat(path)

	o := testOptions()
	o.Passphrase = "wrong horse"
	c, err := client.Open(d.Dir, o)
	if !errors.Is(err, client.ErrWrongPassphrase) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("open with a wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi1, _ := os.Stat(path)
	if !bytes.Equal(before, after) || !fi0.ModTime().Equal(fi1.ModTime()) || fi0.Mode() != fi1.Mode() {
		t.Errorf("a failed open changed the store file (size %d → %d)", len(before), len(after))
	}
	if bytes.Contains(before, []byte("Locked away")) || bytes.Contains(before, []byte("Pending note")) {
		t.Errorf("the store file holds plaintext")
	}
	entries, _ := os.ReadDir(d.Dir)
	if len(entries) != 1 {
		t.Errorf("directory after a failed open: %d files, want just the store", len(entries))
	}

	c, err = client.Open(d.Dir, testOptions())
	if err != nil {
		t.Fatalf("reopen with the right passphrase: %v", err)
	}
	defer c.Close()
	if v, err := c.Find(ctx, caseID); err != nil || v.String("title") != "Locked away" {
		t.Errorf("after reopening: %v, %v", v, err)
	}
	if st := status(t, c); st.Pending != 2 || !st.Enrolled {
		t.Errorf("after reopening: %+v", st)
	}
}

// Before enrolment every write, Sync and Run say ErrNotEnrolled.
func TestNotEnrolled(t *testing.T) {
	ctx := context.Background()
	c, err := client.Open(t.TempDir(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateCase(ctx, map[string]any{"area": "Zuilen", "title": "x"}); !errors.Is(err, client.ErrNotEnrolled) {
		t.Errorf("CreateCase: %v", err)
	}
	if _, err := c.AddEntry(ctx, "01HF3ZB2D8Q4R6S7T9V0W1X2Y3", map[string]any{"kind": "note", "text": "x"}); !errors.Is(err, client.ErrNotEnrolled) {
		t.Errorf("AddEntry: %v", err)
	}
	if _, err := c.Sync(ctx, nil); !errors.Is(err, client.ErrNotEnrolled) {
		t.Errorf("Sync: %v", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Run(rctx); !errors.Is(err, client.ErrNotEnrolled) {
		t.Errorf("Run: %v", err)
	}
	st := status(t, c)
	if st.Enrolled || st.Pending != 0 {
		t.Errorf("status: %+v", st)
	}
}

// Invalid writes are refused locally with the record model's sentinel and
// nothing is queued; so is a write outside the user's areas.
func TestInvalidWritesRefusedLocally(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	c := openClient(t, s, "anouk")
	caseID := mustCreateCase(t, c, map[string]any{"area": "Zuilen", "title": "Valid"})
	entryID := mustAddEntry(t, c, caseID, "Valid note.")
	pending := status(t, c).Pending
	if pending != 2 {
		t.Fatalf("pending = %d, want 2", pending)
	}

	cases := []struct {
		name  string
		write func() error
		want  error
	}{
		{"bad status", func() error {
			_, err := c.CreateCase(ctx, map[string]any{"area": "Zuilen", "title": "x", "status": "pending"})
			return err
		}, syncproto.ErrBadEnum},
		{"bad status on edit", func() error {
			return c.SetCase(ctx, caseID, map[string]any{"status": "done"})
		}, syncproto.ErrBadEnum},
		{"unknown kind", func() error {
			_, err := c.AddEntry(ctx, caseID, map[string]any{"kind": "gossip", "text": "x"})
			return err
		}, syncproto.ErrUnknownKind},
		{"missing title", func() error {
			_, err := c.CreateCase(ctx, map[string]any{"area": "Zuilen"})
			return err
		}, syncproto.ErrMissingField},
		{"missing text", func() error {
			_, err := c.AddEntry(ctx, caseID, map[string]any{"kind": "note"})
			return err
		}, syncproto.ErrMissingField},
		{"referral without referred_to", func() error {
			_, err := c.AddEntry(ctx, caseID, map[string]any{"kind": "referral", "text": "x"})
			return err
		}, syncproto.ErrMissingField},
		{"changing an entry's kind", func() error {
			return c.EditEntry(ctx, entryID, map[string]any{"kind": "visit"})
		}, syncproto.ErrImmutable},
		{"bad date", func() error {
			return c.SetCase(ctx, caseID, map[string]any{"next_action": "next week"})
		}, syncproto.ErrBadDate},
		{"entry for an unknown case", func() error {
			_, err := c.AddEntry(ctx, "01HF3ZB2D8Q4R6S7T9V0W1X2Y3", map[string]any{"kind": "note", "text": "x"})
			return err
		}, syncproto.ErrUnknownCase},
		{"text too large", func() error {
			_, err := c.AddEntry(ctx, caseID, map[string]any{"kind": "note", "text": string(bytes.Repeat([]byte("a"), syncproto.MaxText+1))})
			return err
		}, syncproto.ErrTextTooLarge},
		{"case in another area", func() error {
			_, err := c.CreateCase(ctx, map[string]any{"area": "Ondiep", "title": "Not mine"})
			return err
		}, syncproto.ErrOutOfScope},
	}
	for _, tc := range cases {
		err := tc.write()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if st := status(t, c); st.Pending != pending {
			t.Errorf("%s: pending %d → %d: a refused write was queued", tc.name, pending, st.Pending)
		}
	}
	// Nothing refused reached the server either.
	res := mustSync(t, c)
	if res.Pushed != 2 || res.Rejected != 0 {
		t.Errorf("sync after refused writes: %+v, want 2 pushed", res)
	}
	if cs, _ := c.Cases(ctx, client.Filter{}); len(cs) != 1 {
		t.Errorf("%d cases, want 1", len(cs))
	}
}

// A change the client cannot pre-check: the admin takes Ondiep from Anouk
// after her last sync, and she writes a note to an Ondiep case before
// syncing. The server rejects it with scope; it is kept in Rejected and
// counted in Status until dismissed.
func TestServerRejection(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Ondiep", "Zuilen")
	d := openDevice(t, s, "anouk", s.URL, nil)
	c := d.Client
	oCase := mustCreateCase(t, c, map[string]any{"area": "Ondiep", "title": "Ondiep case"})
	zCase := mustCreateCase(t, c, map[string]any{"area": "Zuilen", "title": "Zuilen case"})
	mustSync(t, c)

	s.SetAreas("anouk", "Zuilen")
	note, err := c.AddEntry(ctx, oCase, map[string]any{"kind": "note", "text": "Written after losing Ondiep."})
	if err != nil {
		t.Fatalf("the client still thinks Ondiep is hers, so the write is accepted locally: %v", err)
	}
	zNote := mustAddEntry(t, c, zCase, "Zuilen note.")
	res := mustSync(t, c)
	if res.Rejected != 1 || res.Pushed != 1 {
		t.Errorf("sync: %+v, want 1 pushed and 1 rejected", res)
	}
	rej, err := c.Rejected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 {
		t.Fatalf("rejected: %+v, want one", rej)
	}
	r := rej[0]
	if r.Error.Code != syncproto.CodeScope || r.Change.ID != note || r.Change.Collection != syncproto.Entries {
		t.Errorf("rejection: %+v", r)
	}
	if !errors.Is(&r.Error, syncproto.ErrOutOfScope) {
		t.Errorf("rejection %v is not ErrOutOfScope", &r.Error)
	}
	if got := string(r.Change.Fields[syncproto.FieldText].Data); got != `"Written after losing Ondiep."` {
		t.Errorf("the rejected change lost its text: %s", got)
	}
	st := status(t, c)
	if st.Rejected != 1 || st.Pending != 0 {
		t.Errorf("status: %+v", st)
	}
	mustNotFind(t, c, note, "rejected note")
	mustNotFind(t, c, oCase, "case of the lost area")
	mustGet(t, c, entryKey(zNote))
	if _, ok := serverRecord(t, s, entryKey(note)); ok {
		t.Errorf("the rejected note is on the server")
	}

	// The rejection survives reopening the replica and another sync,
	// until dismissed.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err = client.Open(d.Dir, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mustSync(t, c)
	if rej, _ := c.Rejected(ctx); len(rej) != 1 || rej[0].Change.ID != note || status(t, c).Rejected != 1 {
		t.Errorf("after reopening and syncing: %+v", rej)
	}
	if err := c.Dismiss(ctx, r.Change.Seq); err != nil {
		t.Fatal(err)
	}
	if rej, _ := c.Rejected(ctx); len(rej) != 0 {
		t.Errorf("after dismiss: %+v", rej)
	}
	if st := status(t, c); st.Rejected != 0 {
		t.Errorf("after dismiss: Status.Rejected = %d", st.Rejected)
	}
}

// Sync against a stopped server returns ErrUnreachable and changes
// nothing locally.
func TestSyncUnreachable(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	c := openClient(t, s, "anouk")
	caseID := mustCreateCase(t, c, map[string]any{"area": "Zuilen", "title": "Offline"})
	mustSync(t, c)
	note := mustAddEntry(t, c, caseID, "Written offline.")
	before := status(t, c)
	beforeCase := summary(t, mustGet(t, c, caseKey(caseID)))
	beforeNote := summary(t, mustGet(t, c, entryKey(note)))

	s.Stop()
	res, err := c.Sync(ctx, nil)
	if !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("sync against a stopped server: %v, want ErrUnreachable", err)
	}
	if res.Pushed != 0 || res.Pulled != 0 {
		t.Errorf("result: %+v", res)
	}
	after := status(t, c)
	if after.Pending != before.Pending || after.Pending != 1 || after.Checkpoint.Seq != before.Checkpoint.Seq || !after.LastSync.Equal(before.LastSync) {
		t.Errorf("status changed: %+v → %+v", before, after)
	}
	if after.LastError == "" || after.Connected {
		t.Errorf("status does not show the failure: %+v", after)
	}
	if got := summary(t, mustGet(t, c, caseKey(caseID))); got != beforeCase {
		t.Errorf("case changed: %s → %s", beforeCase, got)
	}
	if got := summary(t, mustGet(t, c, entryKey(note))); got != beforeNote {
		t.Errorf("note changed: %s → %s", beforeNote, got)
	}
}

// Revocation: the next sync wipes the replica and reports how many
// unsynced changes were lost, and how many rejected ones went with it.
func TestRevoked(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen", "Ondiep")
	d := openDevice(t, s, "anouk", s.URL, nil)
	caseID := mustCreateCase(t, d.Client, map[string]any{"area": "Zuilen", "title": "Stolen laptop"})
	oCase := mustCreateCase(t, d.Client, map[string]any{"area": "Ondiep", "title": "Taken away"})
	mustSync(t, d.Client)
	// One change the server refuses, still listed for the user.
	s.SetAreas("anouk", "Zuilen")
	if _, err := d.AddEntry(ctx, oCase, map[string]any{"kind": "note", "text": "Written after losing Ondiep."}); err != nil {
		t.Fatal(err)
	}
	if res := mustSync(t, d.Client); res.Rejected != 1 {
		t.Fatalf("sync: %+v, want 1 rejected", res)
	}
	mustAddEntry(t, d.Client, caseID, "Unsynced one.")
	mustAddEntry(t, d.Client, caseID, "Unsynced two.")
	if err := d.SetCase(ctx, caseID, map[string]any{"status": "waiting"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.Dir, client.StoreFile)
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}

	s.Revoke(d.ID)
	_, err := d.Sync(ctx, nil)
	var re *client.RevokedError
	if !errors.As(err, &re) {
		t.Fatalf("sync after revocation: %v, want *RevokedError", err)
	}
	if re.Lost != 3 || re.Rejected != 1 {
		t.Errorf("Lost = %d, Rejected = %d; want 3 and 1", re.Lost, re.Rejected)
	}
	if want := "(3 unsynced changes lost, 1 rejected changes discarded)"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if !errors.Is(err, client.ErrRevoked) {
		t.Errorf("%v is not ErrRevoked", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store file after revocation: %v, want it gone", err)
	}
	if _, err := d.Find(ctx, caseID); !errors.Is(err, client.ErrRevoked) {
		t.Errorf("reading after the wipe: %v, want ErrRevoked", err)
	}
	if _, err := d.Sync(ctx, nil); !errors.Is(err, client.ErrRevoked) {
		t.Errorf("syncing after the wipe: %v, want ErrRevoked", err)
	}

	// The next start (the lid was closed before anyone read the message)
	// still says what happened: the notice the wipe left.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := client.Open(d.Dir, testOptions())
	if err != nil {
		t.Fatalf("Open after the wipe: %v", err)
	}
	defer again.Close()
	var told *client.RevokedError
	if _, err := again.Status(ctx); !errors.As(err, &told) || told.Lost != 3 || told.Rejected != 1 || told.At.IsZero() {
		t.Errorf("Status after reopening: %v, want the revocation with 3 lost, 1 rejected and its time", err)
	}
	if _, err := again.Find(ctx, caseID); !errors.Is(err, client.ErrRevoked) {
		t.Errorf("reading after reopening: %v, want ErrRevoked", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store file after reopening: %v, want none", err)
	}

	// The office gives the laptop back with a new token: it starts from an
	// empty replica, and the notice is gone.
	_, tok := s.Enroll("anouk")
	if err := again.Enroll(ctx, s.URL, tok); err != nil {
		t.Fatalf("enroll after revocation: %v", err)
	}
	if st, err := again.Status(ctx); err != nil || !st.Enrolled || st.Pending != 0 || st.Rejected != 0 {
		t.Errorf("status after enrolling again: %+v, %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(d.Dir, client.RevokedFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("revocation notice after enrolling again: %v, want it gone", err)
	}
	if res := mustSync(t, again); res.Pulled != 1 { // the Zuilen case; Ondiep is no longer hers
		t.Errorf("first sync after enrolling again: %+v, want the one case pulled", res)
	}
}

// zuilenDevice starts a server with anouk in Zuilen, enrolls a device of
// hers and creates a case titled title on it, unsynced.
func zuilenDevice(t *testing.T, title string) (*servertest.Server, *device) {
	t.Helper()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	d := openDevice(t, s, "anouk", s.URL, nil)
	mustCreateCase(t, d.Client, map[string]any{"area": "Zuilen", "title": title})
	return s, d
}

// A wipe cut short (the process died after writing its notice, or another
// process held the replica) is finished by the next Open, which answers
// with the notice's revocation. A damaged notice still means revoked, and
// the message claims no counts the notice no longer holds.
func TestRevokedWipeFinishedOnOpen(t *testing.T) {
	tests := []struct {
		name, notice string
		want         func(*client.RevokedError) bool
		message      string
	}{
		{"notice", `{"device":"d","user":"anouk","at":"2026-12-04T09:30:00Z","lost":1,"rejected":0}`,
			func(re *client.RevokedError) bool {
				return re.Lost == 1 && re.At.Equal(time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC))
			}, "(1 unsynced changes lost)"},
		{"damaged notice", `{"device":"d`,
			func(re *client.RevokedError) bool { return re.Lost == -1 }, "an unknown number of unsynced changes lost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := zuilenDevice(t, "Left on the tram")
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d.Dir, client.RevokedFile), []byte(tt.notice), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := client.Open(d.Dir, testOptions())
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer c.Close()
			if _, err := os.Stat(filepath.Join(d.Dir, client.StoreFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("store file after Open with a notice: %v, want it wiped", err)
			}
			var re *client.RevokedError
			if _, err := c.Status(context.Background()); !errors.As(err, &re) || !tt.want(re) || !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Status: %v, want the notice's revocation (%q)", err, tt.message)
			}
		})
	}
}

// Revocation during Run: the live session is ended by the server, Run
// returns the *RevokedError and the replica is wiped.
func TestRevokedWhileRunning(t *testing.T) {
	ctx := context.Background()
	s, d := zuilenDevice(t, "Revoked live")
	done := make(chan error, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { done <- d.Run(rctx) }()
	waitFor(t, d.Client, 10*time.Second, "connected and pushed", func() (bool, error) {
		st, err := d.Status(ctx)
		return err == nil && st.Connected && st.Pending == 0, err
	})
	s.Revoke(d.ID)
	select {
	case err := <-done:
		var re *client.RevokedError
		if !errors.As(err, &re) || re.Lost != 0 {
			t.Errorf("Run after revocation: %v, want *RevokedError with Lost 0", err)
		}
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		t.Fatal("Run kept going after the device was revoked")
	}
	if _, err := os.Stat(filepath.Join(d.Dir, client.StoreFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store file after revocation: %v, want it gone", err)
	}
}
