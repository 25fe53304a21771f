package simtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
)

// The deployment: one server with its real bbolt store, and devices with
// their real encrypted replicas, all in one process and one synctest
// bubble.

const (
	baseURL    = "http://casesync.sim"
	adminToken = "cs_admin_simulation"
	passphrase = "simulated caseworker passphrase"
)

// cheapKDF keeps opening a replica at a few milliseconds: the simulation
// opens hundreds, and Argon2id's strength is tested elsewhere.
var cheapKDF = client.KDFParams{Time: 1, MemoryKiB: 8 * 1024, Threads: 1}

var discard = slog.New(slog.DiscardHandler)

// Areas are the neighbourhoods of the simulation: few, so that scopes
// overlap and cases collide.
var Areas = []string{"Lombok", "Ondiep", "Zuilen"}

// user is a person as the simulation assigned them; the server's copy is
// the truth, read back for the checks.
type user struct {
	name  string
	role  string
	areas []string
}

// device is one enrolled laptop.
type device struct {
	idx  int
	name string // the simulation's name, "d0", "d1", …; the network's key
	id   string // the server's device ID: the dots' device
	user *user
	dir  string
	skew time.Duration // its clock's error: client.Options.Now = now + skew
	c    *client.Client

	seq       uint64 // change seq of its last accepted local write
	pushBatch int    // client.Options.PushBatch: small ones make many pushes

	run *runner // a live Run session, if any
}

// pushBatches estimates how many pushes d's next sync sends.
func (d *device) pushBatches() int {
	st, err := d.c.Status(context.Background())
	if err != nil || st.Pending == 0 {
		return 0
	}
	return (st.Pending + d.pushBatch - 1) / d.pushBatch
}

// runner is a device's Run in the background.
type runner struct {
	cancel context.CancelFunc
	done   chan error
}

// server lifecycle --------------------------------------------------------

// startServer opens the store from disk and serves on a new listener.
func (s *Sim) startServer() {
	st, err := boltstore.Open(filepath.Join(s.srvDir, "casesync.db"), &boltstore.Options{Timeout: time.Second})
	if err != nil {
		s.t.Fatalf("open server store: %v", err)
	}
	srv, err := server.New(server.Config{Store: st, Logger: discard, AdminTokenHash: server.HashToken(adminToken)})
	if err != nil {
		st.Close()
		s.t.Fatalf("new server: %v", err)
	}
	ln := s.net.Listen()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	s.srv, s.store, s.serveDone = srv, st, done
}

// crashServer kills the server: links are cut with whatever they carry,
// sessions are aborted by a Shutdown whose deadline has already passed, and
// the store is closed. Only what bbolt committed survives, as after kill -9.
func (s *Sim) crashServer() {
	if s.srv == nil {
		return
	}
	s.net.ServerDown()
	s.net.Cut("")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.srv.Shutdown(ctx) // reports the sessions it had to abort: expected
	if err := <-s.serveDone; err != nil && !errors.Is(err, server.ErrServerClosed) {
		s.t.Errorf("serve: %v", err)
	}
	if err := s.store.Close(); err != nil {
		s.t.Errorf("close server store: %v", err)
	}
	s.srv, s.store, s.serveDone = nil, nil, nil
}

// admin API ---------------------------------------------------------------

// admin calls the admin API through the simulated network.
func (s *Sim) admin(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, baseURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (s *Sim) addUser(u *user) {
	body := map[string]any{"name": u.name, "role": u.role, "areas": nonNil(u.areas)}
	if err := s.admin(http.MethodPost, "/v1/admin/users", body, nil); err != nil {
		s.t.Fatalf("add user: %v", err)
	}
}

func (s *Sim) setAreas(u *user, areas []string) error {
	if err := s.admin(http.MethodPut, "/v1/admin/users/"+u.name+"/areas", map[string]any{"areas": nonNil(areas)}, nil); err != nil {
		return err
	}
	u.areas = slices.Clone(areas)
	return nil
}

func nonNil(a []string) []string {
	if a == nil {
		return []string{}
	}
	return a
}

// devices -----------------------------------------------------------------

func (s *Sim) options(d *device) *client.Options {
	skew := d.skew
	return &client.Options{
		Passphrase: passphrase,
		KDF:        cheapKDF,
		Logger:     discard,
		Now:        func() time.Time { return time.Now().Add(skew) },
		NetDial:    s.net.Dialer(d.name),
		HTTPClient: s.http,
		PushBatch:  d.pushBatch,
		// The simulated network is in memory: nothing crosses a wire.
		AllowInsecure: true,
		// Run reconnects within seconds of simulated time; a partitioned
		// live device then retries a few dozen times per simulated hour.
		ReconnectMin: time.Second,
		ReconnectMax: time.Minute,
	}
}

// openDevice opens d's replica from its directory.
func (s *Sim) openDevice(d *device) {
	c, err := client.Open(d.dir, s.options(d))
	if err != nil {
		s.t.Fatalf("%s: open replica: %v", d.name, err)
	}
	d.c = c
}

// enroll creates d's replica and enrolls it for its user.
func (s *Sim) enroll(d *device) {
	s.openDevice(d)
	var e server.Enrollment
	if err := s.admin(http.MethodPost, "/v1/admin/devices", map[string]any{"user": d.user.name, "label": d.name}, &e); err != nil {
		s.t.Fatalf("%s: enroll: %v", d.name, err)
	}
	if err := d.c.Enroll(context.Background(), baseURL, e.Token); err != nil {
		s.t.Fatalf("%s: enroll: %v", d.name, err)
	}
	d.id = e.Device.ID
}

// closeDevice stops a live session and closes the replica.
func (s *Sim) closeDevice(d *device) {
	s.stopRun(d)
	if d.c == nil {
		return
	}
	if err := d.c.Close(); err != nil {
		s.t.Errorf("%s: close: %v", d.name, err)
	}
	d.c = nil
}

// startRun keeps d connected in the background (client.Run).
func (s *Sim) startRun(d *device) {
	if d.run != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- d.c.Run(ctx) }()
	d.run = r
}

// stopRun ends d's live session; Run must return nil.
func (s *Sim) stopRun(d *device) {
	if d.run == nil {
		return
	}
	d.run.cancel()
	if err := <-d.run.done; err != nil {
		s.violate("%s: Run returned %v; only revocation, auth or version errors may stop it", d.name, err)
	}
	d.run = nil
}
