//go:build unix

package main_test

// Field scenarios of issue 4, with real casesync processes: each CLI
// command is a process of its own, as when a caseworker types it, so
// every step also survives "her process is restarted".

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/internal/testbin"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/servertest"
	"github.com/casesync/casesync/syncproto"
)

// TestReadmeFlow is the flow the README and the CLI's usage promise:
// enroll with a token, add a case and a note, sync, and see them on a
// second enrolled device.
func TestReadmeFlow(t *testing.T) {
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen", "Ondiep")
	s.AddUser("bram", "caseworker", "Zuilen")

	a, b := newDevice(t), newDevice(t)
	_, tok := s.Enroll("anouk")
	r := a.must("enroll", "--server", s.URL, "--token", tok)
	if !strings.Contains(r.Stdout, "enrolled as anouk (caseworker)") || !strings.Contains(r.Stdout, "Ondiep,Zuilen") {
		t.Fatalf("enroll output: %v", r)
	}
	b.enroll(s, "bram")

	// Human output: the new IDs alone on stdout, for scripts and humans.
	r = a.must("case", "add", "--area", "Zuilen", "--title", "Lekkage badkamer", "--tenant", "P. de Wit", "--address", "Kanaalstraat 12")
	caseID := strings.TrimSpace(r.Stdout)
	if !syncproto.ValidID(caseID) {
		t.Fatalf("case add printed %q", r.Stdout)
	}
	const text = "Huisbezoek: lekkage sinds maart, schimmel op het plafond."
	r = a.must("note", "add", caseID, "--kind", "visit", "--text", text)
	noteID := strings.TrimSpace(r.Stdout)
	if !syncproto.ValidID(noteID) || noteID == caseID {
		t.Fatalf("note add printed %q", r.Stdout)
	}
	if res := a.sync(); res.Pushed != 2 || res.Rejected != 0 {
		t.Fatalf("anouk's sync: %+v, want pushed 2", res)
	}
	if st := a.status(); st.Pending != 0 || st.LastSync.IsZero() || st.LastError != "" {
		t.Fatalf("anouk's status after sync: %+v", st)
	}

	if res := b.sync(); res.Pulled != 2 {
		t.Fatalf("bram's sync: %+v, want pulled 2", res)
	}
	cases := b.cases()
	if len(cases) != 1 || cases[0].ID != caseID || cases[0].Area != "Zuilen" || cases[0].String("tenant") != "P. de Wit" || cases[0].Pending {
		t.Fatalf("bram's cases: %s", dump(cases))
	}
	v := b.show(caseID)
	if v.ID != caseID || v.String("title") != "Lekkage badkamer" || len(v.Entries) != 1 {
		t.Fatalf("bram's show %s: %s", caseID, dump(v))
	}
	e := v.Entries[0]
	if e.ID != noteID || e.String("text") != text || e.String("kind") != "visit" || e.String("author") != "anouk" || e.Area != "Zuilen" {
		t.Fatalf("bram sees the note as %s", dump(e))
	}
	// The human form shows the note's text too.
	if r := b.must("show", caseID); !strings.Contains(r.Stdout, text) || !strings.Contains(r.Stdout, noteID) {
		t.Fatalf("bram's human show lacks the note: %v", r)
	}
	var n client.View
	b.mustJSON(&n, "show", noteID)
	if n.ID != noteID || n.String("text") != text {
		t.Fatalf("bram's show %s: %s", noteID, dump(n))
	}
}

// TestHomeVisitOffline: a caseworker records a visit with the server out
// of reach, each command a new process; a sync while offline fails
// clearly and leaves every change queued; back online one sync pushes
// everything;
// colleagues of the area and the lead get it, a caseworker of another
// area gets none of it — not even in the raw bytes of her replica.
func TestHomeVisitOffline(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	s.AddUser("chantal", "caseworker", "Ondiep")
	s.AddUser("lotte", "lead")

	a, c := newDevice(t), newDevice(t)
	a.enroll(s, "anouk")
	c.enroll(s, "chantal")
	bram := libClient(t, s, t.TempDir(), "bram")
	lead := libClient(t, s, t.TempDir(), "lotte")

	s.Stop() // the living room has no network

	const (
		title  = "Overlast bovenburen"
		tenant = "Wilhelmina Oosterhuis-Brandsma"
	)
	texts := []string{
		"Huisbezoek 14:00. Mevrouw Oosterhuis klaagt over nachtelijk lawaai; slaapt slecht.",
		"Tweede bezoek, samen met de wijkagent.\nBovenburen niet thuis; briefje achtergelaten.\nVolgende week opnieuw.",
		"Korte bel-afspraak gemaakt met de huisarts over psychische klachten.",
	}
	caseID := a.addCase("Zuilen", title, tenant)
	noteIDs := []string{
		a.addNote(caseID, "visit", texts[0], nil),
		a.addNote(caseID, "visit", "", strings.NewReader(texts[1]+"\n")), // typed on stdin, ended with Ctrl-D
		a.addNote(caseID, "visit", texts[2], nil),
	}

	r := a.run(nil, "sync")
	if r.Code == 0 {
		t.Fatalf("sync with the server down succeeded: %v", r)
	}
	if !strings.Contains(r.Stderr, "unreachable") || !strings.Contains(r.Stderr, "local data is untouched") {
		t.Fatalf("sync with the server down does not say so clearly: %v", r)
	}
	st := a.status()
	if !st.Enrolled || st.Pending != 4 || st.Rejected != 0 || st.Connected || !strings.Contains(st.LastError, "unreachable") {
		t.Fatalf("status after the failed sync: %+v, want pending 4 and the error", st)
	}
	local := a.show(caseID)
	if !local.Pending || local.String("tenant") != tenant || len(local.Entries) != 3 {
		t.Fatalf("anouk's offline case: %s", dump(local))
	}
	for i, e := range local.Entries {
		if e.ID != noteIDs[i] || e.String("text") != texts[i] || e.String("author") != "anouk" {
			t.Fatalf("offline note %d: %s, want ID %s text %q", i, dump(e), noteIDs[i], texts[i])
		}
		if !e.Pending {
			t.Errorf("BUG: offline note %d is not marked pending in 'show' (client.Entries drops the pending flag)", i)
		}
	}
	if cs := a.cases(); len(cs) != 1 || cs[0].ID != caseID {
		t.Fatalf("anouk's offline cases: %s", dump(cs))
	} else if !cs[0].Pending {
		t.Errorf("BUG: the offline case is not marked pending in 'cases' (client.Cases drops the pending flag)")
	}

	s.Restart() // back on the office wifi, same address
	res := a.sync()
	if res.Pushed != 4 || res.Rejected != 0 || res.Deferred != 0 {
		t.Fatalf("sync after the server is back: %+v, want pushed 4", res)
	}
	if st := a.status(); st.Pending != 0 || st.Rejected != 0 || st.LastError != "" || st.LastSync.IsZero() {
		t.Fatalf("status after sync: %+v", st)
	}

	for name, cl := range map[string]*client.Client{"bram": bram, "lotte (lead)": lead} {
		if _, err := cl.Sync(ctx, nil); err != nil {
			t.Fatalf("%s's sync: %v", name, err)
		}
		cv, err := cl.Find(ctx, caseID)
		if err != nil || cv.String("tenant") != tenant || cv.String("title") != title || cv.Area != "Zuilen" {
			t.Fatalf("%s's case: %s, %v", name, dump(cv), err)
		}
		es, err := cl.Entries(ctx, caseID)
		if err != nil || len(es) != 3 {
			t.Fatalf("%s's entries: %s, %v", name, dump(es), err)
		}
		for i, e := range es {
			if e.ID != noteIDs[i] || e.String("text") != texts[i] || e.String("author") != "anouk" {
				t.Fatalf("%s's note %d: %s", name, i, dump(e))
			}
		}
	}

	// Chantal works in Ondiep: she syncs and gets nothing of Zuilen.
	if res := c.sync(); res.Pulled != 0 {
		t.Fatalf("chantal pulled %d records: %+v", res.Pulled, res)
	}
	if cs := c.cases(); len(cs) != 0 {
		t.Fatalf("chantal sees cases: %s", dump(cs))
	}
	for _, id := range []string{caseID, noteIDs[0]} {
		r := c.run(nil, "show", id)
		if r.Code == 0 || !strings.Contains(r.Stderr, "no such record") {
			t.Fatalf("chantal can show %s: %v", id, r)
		}
	}
	markers := append([]string{tenant, title, "Oosterhuis", "Zuilen"}, texts...)
	for _, line := range strings.Split(texts[1], "\n") {
		markers = append(markers, line)
	}
	if found := filesContain(t, c.dir, markers...); len(found) > 0 {
		t.Errorf("chantal's replica holds Zuilen's data: %q", found)
	}
	// Encryption at rest: even anouk's own replica has no plaintext.
	if found := filesContain(t, a.dir, append(markers, "anouk", s.Addr)...); len(found) > 0 {
		t.Errorf("anouk's replica holds plaintext: %q", found)
	}
	if found := filesContain(t, c.dir, "chantal", "Ondiep", s.Addr); len(found) > 0 {
		t.Errorf("chantal's replica holds plaintext: %q", found)
	}
}

// TestBackAtTheOffice: `casesync run` is started while the server is
// down; once the server is up it pushes what was written before, and what
// is written while it runs, within seconds; Ctrl-C stops it cleanly.
func TestBackAtTheOffice(t *testing.T) {
	ctx := context.Background()
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("lotte", "lead")
	a := newDevice(t)
	a.enroll(s, "anouk")
	lead := libClient(t, s, t.TempDir(), "lotte")
	s.Stop()

	caseID := a.addCase("Zuilen", "Huurachterstand", "J. Bakker")
	const text1 = "Gesprek op kantoor over de betalingsregeling."
	note1 := a.addNote(caseID, "office_hours", text1, nil)

	p := a.startLocal(nil, "run")
	eventually(t, 10*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), "syncing in the background") || p.exited()
	}, func() string { return "run did not start: " + p.stderr.String() })
	if p.exited() {
		t.Fatalf("run exited while the server is down (it should keep retrying): %v\n%s", p.err, p.stderr.String())
	}

	s.Restart()
	arrived := func(id, text string) func() bool {
		return func() bool {
			if _, err := lead.Sync(ctx, nil); err != nil {
				t.Logf("lead sync: %v", err)
				return false
			}
			v, err := lead.Find(ctx, id)
			return err == nil && v.String("text") == text
		}
	}
	start := time.Now()
	eventually(t, 15*time.Second, arrived(note1, text1), func() string {
		return "the note written before run started did not reach the server; run's stderr: " + p.stderr.String()
	})
	t.Logf("note written before run reached the server %v after the server came back", time.Since(start).Round(time.Millisecond))
	if p.exited() {
		t.Fatalf("run exited: %v\n%s", p.err, p.stderr.String())
	}

	// A note written with the CLI while run is active.
	const text2 = "Telefoon: regeling akkoord, eerste termijn volgende week."
	r := a.run(nil, "--json", "note", "add", caseID, "--kind", "call", "--text", text2)
	if r.Code != 0 {
		t.Errorf("BUG: cannot write a note while 'casesync run' is active: %v", r)
	} else {
		var out struct{ ID string }
		if err := jsonUnmarshal(r.Stdout, &out); err != nil {
			t.Fatal(err)
		}
		start = time.Now()
		eventually(t, 15*time.Second, arrived(out.ID, text2), func() string {
			return "the note written while run is active did not reach the server; run's stderr: " + p.stderr.String()
		})
		t.Logf("note written during run reached the server in %v", time.Since(start).Round(time.Millisecond))
	}

	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("run exited %d after SIGINT, want 0\n%s", code, p.stderr.String())
	}
	if st := a.status(); st.Pending != 0 {
		t.Fatalf("after run: %+v, want pending 0", st)
	}
}

// TestLostLaptop: a revoked device's next sync wipes its replica and says
// how many unsynced changes went with it; so does every command after it,
// until the laptop is enrolled again.
func TestLostLaptop(t *testing.T) {
	s := servertest.NewServer(t, nil)
	s.AddUser("anouk", "caseworker", "Zuilen")
	a := newDevice(t)
	dev := a.enroll(s, "anouk")
	const tenant, text = "K. Yilmaz", "Bezoek: huurder wil verhuizen naar de benedenverdieping."
	caseID := a.addCase("Zuilen", "Herhuisvesting", tenant)
	a.addNote(caseID, "visit", text, nil)
	if st := a.status(); st.Pending != 2 {
		t.Fatalf("before revocation: %+v, want pending 2", st)
	}

	s.Revoke(dev)
	r := a.run(nil, "sync")
	if r.Code == 0 {
		t.Fatalf("sync of a revoked device succeeded: %v", r)
	}
	if !strings.Contains(r.Stderr, "revoked") || !strings.Contains(r.Stderr, "2 unsynced changes lost") {
		t.Fatalf("sync of a revoked device does not say so, or how much was lost: %v", r)
	}
	if _, err := os.Stat(a.DB()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the replica file survived revocation: %v", err)
	}
	if found := filesContain(t, a.dir, tenant, text); len(found) > 0 {
		t.Fatalf("data survived the wipe: %q", found)
	}
	if recs, head := serverRecords(t, s); len(recs) != 0 || head != 0 {
		t.Fatalf("the server got %d records (head %d) from a revoked device", len(recs), head)
	}
	// Every later command says what happened and what to do, with the
	// same counts: the notice the wipe left, which holds no case data (the
	// filesContain check above read it too).
	for _, args := range [][]string{{"status"}, {"sync"}, {"cases"}, {"note", "add", caseID, "--kind", "note", "--text", "x"}} {
		r := a.run(nil, args...)
		if r.Code == 0 || !strings.Contains(r.Stderr, "revoked by the office") || !strings.Contains(r.Stderr, "2 unsynced changes lost") ||
			!strings.Contains(r.Stderr, "casesync enroll") {
			t.Errorf("casesync %v after the wipe: %v, want the revocation notice", args, r)
		}
	}
	// The office gives the laptop back with a new token.
	if id := a.enroll(s, "anouk"); id == dev {
		t.Errorf("enrolled again as the revoked device %s", dev)
	}
	if st := a.status(); !st.Enrolled || st.Pending != 0 {
		t.Errorf("status after enrolling again: %+v", st)
	}
}

// TestCrashDuringSync kills `casesync sync` with SIGKILL at several
// moments of a large push and of a large pull. After every kill nothing
// is lost (each created change is on the server or still in the outbox)
// and the replica opens; one more sync afterwards leaves server and
// devices in agreement, with nothing duplicated.
func TestCrashDuringSync(t *testing.T) {
	const (
		nCases = 2
		nNotes = 2000
	)
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CASESYNC_TEST_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (rerun with CASESYNC_TEST_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	began := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(began).Seconds(), what) }

	// Small changes messages: a pull is many transactions, so a kill can
	// land between them.
	s := servertest.NewServer(t, &servertest.Options{Config: server.Config{BatchRecords: 100}})
	s.AddUser("anouk", "caseworker", "Zuilen")
	s.AddUser("bram", "caseworker", "Zuilen")
	s.AddUser("lotte", "lead")

	// openLib opens a CLI replica in the test process, between processes.
	openLib := func(d *device) *client.Client {
		t.Helper()
		c, err := client.Open(d.dir, &client.Options{Passphrase: passphrase, KDF: cheapKDF})
		if err != nil {
			t.Fatalf("the replica does not open after a kill: %v", err)
		}
		return c
	}

	// Anouk's laptop: a backlog written with the library in the CLI's
	// directory (cheap KDF, so the many CLI starts stay fast).
	pusher := newDevice(t)
	want := map[string]string{} // entry ID → text
	wantCase := map[string]string{}
	caseIDs := make([]string, nCases)
	{
		lib := openLib(pusher)
		_, tok := s.Enroll("anouk")
		if err := lib.Enroll(ctx, s.URL, tok); err != nil {
			t.Fatal(err)
		}
		var err error
		for i := range caseIDs {
			if caseIDs[i], err = lib.CreateCase(ctx, map[string]any{"area": "Zuilen", "title": fmt.Sprintf("Dossier %d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		pad := strings.Repeat("Verslag van het huisbezoek. ", 40)[:1000]
		for i := range nNotes {
			cid := caseIDs[i%nCases]
			text := fmt.Sprintf("note %04d: %s", i, pad)
			id, err := lib.AddEntry(ctx, cid, map[string]any{"kind": "visit", "text": text})
			if err != nil {
				t.Fatal(err)
			}
			want[id], wantCase[id] = text, cid
		}
		if err := lib.Close(); err != nil {
			t.Fatal(err)
		}
	}
	phase("backlog written")
	total := uint64(nCases + nNotes)
	allKeys := make([]syncproto.Key, 0, total)
	for _, id := range caseIDs {
		allKeys = append(allKeys, syncproto.Key{Collection: syncproto.Cases, ID: id})
	}
	for id := range want {
		allKeys = append(allKeys, syncproto.Key{Collection: syncproto.Entries, ID: id})
	}
	if st := pusher.status(); st.Pending != int(total) {
		t.Fatalf("pusher status: %+v, want pending %d", st, total)
	}

	// checkServer asserts the server holds nothing but created records,
	// each once, and that no change was applied twice (every change
	// creates one record and takes one log sequence).
	checkServer := func(when string) (map[syncproto.Key]*syncproto.Record, uint64) {
		t.Helper()
		recs, head := serverRecords(t, s)
		if head > total || uint64(len(recs)) != head {
			t.Fatalf("%s: server has %d records at head %d; %d changes were made, each creating one record", when, len(recs), head, total)
		}
		for k := range recs {
			if _, ok := want[k.ID]; !ok && !slices.Contains(caseIDs, k.ID) {
				t.Fatalf("%s: server has a record nobody created: %s", when, k)
			}
		}
		return recs, head
	}
	// checkNothingLost asserts that every created change is on the server
	// or still pending on anouk's laptop.
	checkNothingLost := func(when string) int {
		t.Helper()
		recs, _ := checkServer(when)
		lib := openLib(pusher)
		defer lib.Close()
		st, err := lib.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range allKeys {
			if _, ok := recs[k]; ok {
				continue
			}
			v, err := lib.Get(ctx, k)
			if err != nil || !v.Pending {
				t.Fatalf("%s: %s is neither on the server nor pending on the laptop (%v)", when, k, err)
			}
		}
		if st.Pending+len(recs) < int(total) {
			t.Fatalf("%s: %d pending + %d on the server < %d created", when, st.Pending, len(recs), total)
		}
		return st.Pending
	}

	randomDelay := func() (func() bool, string) {
		d := time.Duration(rng.IntN(1000)) * time.Millisecond
		deadline := time.Now().Add(d)
		return func() bool { return !time.Now().Before(deadline) }, fmt.Sprintf("random delay %v after start", d)
	}

	// Push, killed at three moments.
	for round := range 3 {
		h0 := serverHead(t, s)
		p := pusher.start("--json", "sync")
		var cond func() bool
		var moment string
		switch round {
		case 0:
			moment = "first changes committed on the server"
			cond = func() bool { return serverHead(t, s) > h0 }
		case 1:
			// The handshake's transaction, then the first ack applied
			// (or changes pulled): the outbox shrinks.
			tx0 := boltTxID(pusher.DB())
			moment = "2 transactions committed on the laptop"
			cond = func() bool { return boltTxID(pusher.DB()) >= tx0+2 }
		case 2:
			cond, moment = randomDelay()
		}
		eventually(t, 60*time.Second, func() bool { return cond() || p.Exited() }, func() string { return "push round " + moment })
		killed := p.kill9(t)
		if !killed && testbin.MustExitCode(t, p.Err()) != 0 {
			t.Fatalf("push round %d: sync failed by itself: %v\n%s", round, p.Err(), p.Output())
		}
		pending := checkNothingLost(fmt.Sprintf("push round %d", round))
		phase(fmt.Sprintf("push round %d", round))
		t.Logf("push round %d (%s): killed=%v, server head %d/%d, laptop pending %d", round, moment, killed, serverHead(t, s), total, pending)
	}
	phase("push rounds done")
	res := pusher.sync()
	if res.Rejected != 0 || res.Deferred != 0 {
		t.Fatalf("final push: %+v", res)
	}
	recs, head := checkServer("after the final push")
	if head != total || len(recs) != int(total) {
		t.Fatalf("after the final push the server has %d records at head %d, want exactly %d (one per change, none twice)", len(recs), head, total)
	}
	for id, text := range want {
		r := recs[syncproto.Key{Collection: syncproto.Entries, ID: id}]
		if got, _ := r.String("text"); got != text || len(r.Conflicts()) != 0 || r.Area != "Zuilen" {
			t.Fatalf("note %s on the server: text %.20q, area %q, conflicts %v", id, got, r.Area, r.Conflicts())
		}
	}

	phase("final push checked")
	// Bram's laptop pulls everything, killed at three moments.
	puller := newDevice(t)
	{
		lib := libClient(t, s, puller.dir, "bram")
		if err := lib.Close(); err != nil {
			t.Fatal(err)
		}
	}
	held := 0
	for round := range 3 {
		tx0 := boltTxID(puller.DB())
		p := puller.start("--json", "sync")
		var cond func() bool
		var moment string
		switch round {
		case 0, 1:
			// The handshake's transaction, then changes messages applied
			// (one transaction each).
			n := uint64(1 + 2*round + 1)
			moment = fmt.Sprintf("%d transactions committed", n)
			cond = func() bool { return boltTxID(puller.DB()) >= tx0+n }
		case 2:
			cond, moment = randomDelay()
		}
		eventually(t, 60*time.Second, func() bool { return cond() || p.Exited() }, func() string { return "pull round " + moment })
		killed := p.kill9(t)
		if !killed && testbin.MustExitCode(t, p.Err()) != 0 {
			t.Fatalf("pull round %d: sync failed by itself: %v\n%s", round, p.Err(), p.Output())
		}
		// What the replica holds after the kill is whole and correct.
		lib := openLib(puller)
		n := 0
		for _, cid := range caseIDs {
			es, err := lib.Entries(ctx, cid)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				if e.String("text") != want[e.ID] || wantCase[e.ID] != cid {
					t.Fatalf("pull round %d: bram holds note %s as %.20q", round, e.ID, e.String("text"))
				}
			}
			n += len(es)
		}
		st, err := lib.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lib.Close()
		if n < held || st.Pending != 0 {
			t.Fatalf("pull round %d: bram holds %d notes (before: %d), pending %d", round, n, held, st.Pending)
		}
		held = n
		phase(fmt.Sprintf("pull round %d", round))
		t.Logf("pull round %d (%s): killed=%v, bram holds %d/%d notes, checkpoint %d", round, moment, killed, n, nNotes, st.Checkpoint.Seq)
	}
	phase("pull rounds done")
	if res := puller.sync(); res.Rejected != 0 || res.Pushed != 0 || res.Seq != total {
		t.Fatalf("final pull: %+v", res)
	}

	phase("final pull done")
	// The lead's view of the server, by pulling.
	lead := libClient(t, s, t.TempDir(), "lotte")
	if res, err := lead.Sync(ctx, nil); err != nil || res.Pulled != int(total) || res.Seq != total {
		t.Fatalf("the lead's pull: %+v, %v; want %d records", res, err, total)
	}
	if cs, err := lead.Cases(ctx, client.Filter{}); err != nil || len(cs) != nCases {
		t.Fatalf("the lead has %d cases (%v), want %d", len(cs), err, nCases)
	}
	if es, err := lead.Entries(ctx, caseIDs[0]); err != nil || len(es) != nNotes/nCases {
		t.Fatalf("the lead has %d notes in case %s (%v), want %d", len(es), caseIDs[0], err, nNotes/nCases)
	}
	phase("lead pulled")
	// Both laptops, through the CLI, agree with the server.
	for _, x := range []struct {
		name string
		d    *device
	}{{"anouk (pushed)", pusher}, {"bram (pulled)", puller}} {
		name, d := x.name, x.d
		if st := d.status(); st.Pending != 0 || st.Rejected != 0 || st.Conflicts != 0 {
			t.Fatalf("%s: status %+v, want pending 0", name, st)
		}
		var got []string
		for _, c := range d.cases() {
			got = append(got, c.ID)
		}
		slices.Sort(got)
		if !slices.Equal(got, slices.Sorted(slices.Values(caseIDs))) {
			t.Fatalf("%s: cases %v, want %v", name, got, caseIDs)
		}
		seen := map[string]int{}
		for _, cid := range caseIDs {
			v := d.show(cid)
			for _, e := range v.Entries {
				seen[e.ID]++
				if e.String("text") != want[e.ID] || wantCase[e.ID] != cid || e.Pending {
					t.Fatalf("%s: note %s in case %s: %.20q pending=%v", name, e.ID, cid, e.String("text"), e.Pending)
				}
			}
		}
		if len(seen) != nNotes {
			t.Fatalf("%s: %d distinct notes, want %d", name, len(seen), nNotes)
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("%s: note %s shown %d times", name, id, n)
			}
		}
		phase(name + " checked through the CLI")
	}
}
