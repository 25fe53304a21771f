package main

// Preparation: accounts on a server, then replicas that hold the dataset
// in their outboxes, ready to push. Both are snapshots (a stopped server's
// data directory, closed replicas) that every push run copies, so each run
// pushes exactly the same changes to an empty server.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/casesync/casesync/client"
	"github.com/casesync/casesync/syncproto"
)

// passphrase unlocks every replica; the KDF is client.DefaultKDF.
const passphrase = "bench: a long passphrase for the replicas"

// Device names.
const (
	devLeadImport = "lead/import" // creates the cases
	devLeadPull   = "lead/pull"   // the cold pull
	devPuller     = "puller"      // a caseworker with the dataset's areas: scale
	devFanWriter  = "fan/writer"
	userLead      = "lead"
	userPuller    = "w-puller"
	userFan       = "w-fan"
)

func importDev(worker string) string { return worker + "/import" }
func laptopDev(worker string) string { return worker + "/laptop" }
func fanDev(i int) string            { return fmt.Sprintf("fan/%02d", i) }

// workerAreas returns each worker's areas: those of the cases they own or
// write notes about, so every author can see every case she writes about.
func (b *bench) workerAreas() map[string][]string {
	caseArea := map[string]string{}
	out := map[string][]string{}
	add := func(w, a string) {
		if !slices.Contains(out[w], a) {
			out[w] = append(out[w], a)
		}
	}
	for _, c := range b.ds.Cases {
		caseArea[c.ID] = c.Area
		add(c.Owner, c.Area)
	}
	for _, n := range b.ds.Notes {
		add(n.Author, caseArea[n.CaseID])
	}
	return out
}

// accounts makes the users and devices on a fresh server and keeps its
// stopped data directory as the snapshot every server starts from.
func (b *bench) accounts(ctx context.Context) error {
	dir := filepath.Join(b.tmp, "srv", "accounts")
	s, err := b.start(ctx, dir)
	if err != nil {
		return err
	}
	defer b.stopServer(s)
	enroll := func(user, dev string) error {
		tok, err := s.enroll(ctx, user, dev)
		b.tokens[dev] = tok
		return err
	}
	if err := s.addUser(ctx, userLead, syncproto.RoleLead, nil); err != nil {
		return err
	}
	for _, d := range []string{devLeadImport, devLeadPull} {
		if err := enroll(userLead, d); err != nil {
			return err
		}
	}
	for w, areas := range b.workerAreas() {
		if err := s.addUser(ctx, w, syncproto.RoleCaseworker, areas); err != nil {
			return err
		}
		for _, d := range []string{importDev(w), laptopDev(w)} {
			if err := enroll(w, d); err != nil {
				return err
			}
		}
	}
	if err := s.addUser(ctx, userPuller, syncproto.RoleCaseworker, b.ds.Areas()); err != nil {
		return err
	}
	if err := enroll(userPuller, devPuller); err != nil {
		return err
	}
	if err := s.addUser(ctx, userFan, syncproto.RoleCaseworker, []string{b.fanArea}); err != nil {
		return err
	}
	if err := enroll(userFan, devFanWriter); err != nil {
		return err
	}
	for i := range b.o.fanout {
		if err := enroll(userFan, fanDev(i)); err != nil {
			return err
		}
	}
	if err := b.stopServer(s); err != nil {
		return err
	}
	b.accountsDir = dir
	return nil
}

// openLocal opens a replica in this process, for preparation only.
func (b *bench) openLocal(ctx context.Context, dir, addr, url, dev string) (*client.Client, error) {
	c, err := client.Open(dir, &client.Options{Passphrase: passphrase, NetDial: newWire(addr).dial})
	if err != nil {
		return nil, err
	}
	if err := c.Enroll(ctx, url, b.tokens[dev]); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// populate writes the dataset into replicas' outboxes through the client
// API: the cases on the lead's import device, each worker's notes on her
// import device (an entry's author must be the pushing user). The notes'
// devices must hold the cases to write about them, so the cases are
// pushed to a scratch server and pulled by the workers; the lead's replica
// is snapshotted before it pushes. Replica IDs are new ULIDs (CreateCase
// and AddEntry make them); b.ids maps the dataset's IDs to them.
func (b *bench) populate(ctx context.Context) error {
	data := filepath.Join(b.tmp, "srv", "populate")
	if err := copyDir(b.accountsDir, data); err != nil {
		return err
	}
	s, err := b.start(ctx, data)
	if err != nil {
		return err
	}
	defer func() { b.stopServer(s); os.RemoveAll(data) }()

	t := time.Now()
	dir := filepath.Join(b.tmp, "work", devLeadImport)
	lead, err := b.openLocal(ctx, dir, s.addr, s.url, devLeadImport)
	if err != nil {
		return err
	}
	for i := range b.ds.Cases {
		c := &b.ds.Cases[i]
		id, err := lead.CreateCase(ctx, c.Fields())
		if err != nil {
			lead.Close()
			return fmt.Errorf("create case %s: %w", c.ID, err)
		}
		b.ids[c.ID] = id
	}
	lead.Close()
	if err := b.snapshot(devLeadImport, dir); err != nil {
		return err
	}
	if lead, err = b.openLocal(ctx, dir, s.addr, s.url, devLeadImport); err != nil {
		return err
	}
	r, err := lead.Sync(ctx, nil)
	lead.Close()
	if err != nil || r.Pushed != len(b.ds.Cases) {
		return fmt.Errorf("populate: push cases: %+v %v", r, err)
	}
	b.log.Info("cases written", "n", len(b.ds.Cases), "took", time.Since(t).Round(time.Millisecond))

	t = time.Now()
	byAuthor := map[string][]int{}
	for i, n := range b.ds.Notes {
		byAuthor[n.Author] = append(byAuthor[n.Author], i)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	noteIDs := map[string]string{}
	errs := make(chan error, len(byAuthor))
	for w, idx := range byAuthor {
		wg.Go(func() {
			local := make(map[string]string, len(idx))
			dir := filepath.Join(b.tmp, "work", importDev(w))
			c, err := b.openLocal(ctx, dir, s.addr, s.url, importDev(w))
			if err == nil {
				_, err = c.Sync(ctx, nil) // the cases she writes about
			}
			for _, i := range idx {
				if err != nil {
					break
				}
				n := &b.ds.Notes[i]
				var id string
				if id, err = c.AddEntry(ctx, b.ids[n.CaseID], n.Fields()); err == nil {
					local[n.ID] = id
				}
			}
			mu.Lock()
			maps.Copy(noteIDs, local)
			mu.Unlock()
			if c != nil {
				c.Close()
			}
			if err == nil {
				err = b.snapshot(importDev(w), dir)
			}
			if err != nil {
				errs <- fmt.Errorf("populate %s: %w", w, err)
			}
		})
	}
	wg.Wait()
	maps.Copy(b.ids, noteIDs)
	close(errs)
	for err := range errs {
		return err
	}
	b.log.Info("notes written", "n", len(b.ds.Notes), "took", time.Since(t).Round(time.Millisecond))
	return nil
}

// snapshot moves a closed replica's directory to the snapshot area.
func (b *bench) snapshot(dev, dir string) error {
	dst := filepath.Join(b.tmp, "snap", dev)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	os.RemoveAll(dst)
	if err := copyDir(dir, dst); err != nil {
		return err
	}
	b.snaps[dev] = dst
	return nil
}

// start starts a server on data and registers it for cleanup.
func (b *bench) start(ctx context.Context, data string) (*casesyncd, error) {
	if err := os.MkdirAll(filepath.Dir(data), 0o700); err != nil {
		return nil, err
	}
	s, err := startServer(ctx, b.bin, data)
	if err != nil {
		return nil, err
	}
	b.srvMu.Lock()
	b.servers = append(b.servers, s)
	b.srvMu.Unlock()
	return s, nil
}

func (b *bench) stopServer(s *casesyncd) error {
	err := s.stop()
	if err != nil {
		b.log.Warn("stop casesyncd", "err", err)
	}
	return err
}
