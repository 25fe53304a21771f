package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// StoreFile is the name of the replica's file inside the client directory.
const StoreFile = "casesync.db"

// Options configure a Client. The zero value of each field is its default.
type Options struct {
	// Passphrase unlocks the store (Argon2id); KeyFile names a file holding
	// a 32-byte key instead. One of them is required.
	Passphrase string
	KeyFile    string
	// KDF tunes Argon2id; default DefaultKDF. Tests use cheaper parameters.
	KDF KDFParams
	// Logger receives the client's logs; they never contain record content
	// or tokens. Default: discard.
	Logger *slog.Logger
	// Now reads the wall clock. Default time.Now.
	Now func() time.Time
	// LockTimeout bounds the wait for a store another process holds. Default 1 s.
	LockTimeout time.Duration
	// PushBatch is the most changes per push. Default 500 (and at most
	// what the server announces).
	PushBatch int
	// DialTimeout bounds connecting to the server. Default 10 s.
	DialTimeout time.Duration
	// ReconnectMin and ReconnectMax bound Run's exponential backoff.
	// Defaults 250 ms and 5 s: a laptop back on office wifi syncs within
	// seconds.
	ReconnectMin, ReconnectMax time.Duration
	// HTTPClient is used to enroll. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Shared opens the store's file for each transaction only, so that
	// other processes can use the replica while this one syncs (the CLI
	// while 'casesync run' is active); Run then also looks for their
	// changes every second. It costs an open per transaction.
	Shared bool
	// AllowInsecure permits an http:// server that is not on this machine.
	// Without it, Enroll refuses one: tokens and case notes would cross the
	// network in clear.
	AllowInsecure bool
	// NetDial, if set, opens the sync connection's network connection
	// instead of the system dialer: simulations and tests inject faults
	// and in-memory networks through it.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (o *Options) setDefaults() {
	if o.KDF == (KDFParams{}) {
		o.KDF = DefaultKDF
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = time.Second
	}
	if o.PushBatch <= 0 {
		o.PushBatch = 500
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = 250 * time.Millisecond
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = 5 * time.Second
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
}

// Client is a caseworker's replica: records and an outbox in an encrypted
// local store, and the engine that syncs them with the server. It is safe
// for concurrent use.
type Client struct {
	opts  Options
	dir   string
	log   *slog.Logger
	clock *syncproto.Clock
	ids   *syncproto.IDGenerator
	codec *syncproto.Codec

	mu      sync.Mutex // guards st, revoked; held only briefly
	st      *store
	ks      keySource
	revoked *RevokedError // set once the replica was wiped after revocation (revoked.go)

	syncMu sync.Mutex // one sync session at a time

	subsMu sync.Mutex
	subs   map[chan Event]struct{}
	kick   chan struct{} // a local write wants pushing

	statusMu  sync.Mutex
	connected bool
	lastErr   string

	closeOnce sync.Once
}

// Open opens (creating if needed) the replica in dir.
func Open(dir string, opts *Options) (*Client, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.setDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("client: create %s: %w", dir, err)
	}
	ks := keySource{passphrase: []byte(o.Passphrase), keyFile: o.KeyFile, kdf: o.KDF}
	n, err := readNotice(dir)
	if err != nil {
		return nil, err
	}
	if n != nil {
		return openRevoked(dir, o, ks, n)
	}
	st, err := openStore(filepath.Join(dir, StoreFile), ks, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	if o.Shared {
		st.share()
	}
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		st.close()
		return nil, err
	}
	c := &Client{
		opts: o, dir: dir, log: o.Logger, st: st, ks: ks, codec: codec,
		ids:  syncproto.NewIDGenerator(o.Now),
		subs: make(map[chan Event]struct{}),
		kick: make(chan struct{}, 1),
	}
	var m Meta
	if err := st.view(func(tx *stx) error { m, err = tx.meta(); return err }); err != nil {
		st.close()
		codec.Close()
		return nil, err
	}
	c.clock = syncproto.NewClock(o.Now, m.ClockLast)
	c.clock.SetOffset(time.Duration(m.ClockOffsetMS) * time.Millisecond)
	return c, nil
}

// openRevoked opens a client directory that holds a revocation notice: it
// finishes the wipe if a replica is still there, and returns a client
// whose every use but Enroll and Close answers the notice's
// *RevokedError.
func openRevoked(dir string, o Options, ks keySource, n *notice) (*Client, error) {
	if err := wipeStore(filepath.Join(dir, StoreFile)); err != nil {
		return nil, fmt.Errorf("client: this device was revoked, and its replica is not wiped yet: %w", err)
	}
	codec, err := syncproto.NewCodec(0)
	if err != nil {
		return nil, err
	}
	return &Client{
		opts: o, dir: dir, log: o.Logger, ks: ks, codec: codec, revoked: n.err(),
		ids:   syncproto.NewIDGenerator(o.Now),
		clock: syncproto.NewClock(o.Now, 0),
		subs:  make(map[chan Event]struct{}),
		kick:  make(chan struct{}, 1),
	}, nil
}

// reopenRevoked gives a revoked client a new, empty replica to enroll,
// and reports whether it did.
func (c *Client) reopenRevoked() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked == nil {
		return false, nil
	}
	st, err := openStore(filepath.Join(c.dir, StoreFile), c.ks, c.opts.LockTimeout)
	if err != nil {
		return false, err
	}
	if c.opts.Shared {
		st.share()
	}
	c.st, c.revoked = st, nil
	return true, nil
}

// Close closes the replica. Pending changes stay in the outbox.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.syncMu.Lock() // wait for a running sync to finish
		defer c.syncMu.Unlock()
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.st != nil {
			err = c.st.close()
			c.st = nil
		}
		c.codec.Close()
		c.subsMu.Lock()
		for ch := range c.subs {
			close(ch)
			delete(c.subs, ch)
		}
		c.subsMu.Unlock()
	})
	return err
}

// store returns the open store, or ErrClosed (or a *RevokedError after
// a wipe).
func (c *Client) store() (*store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.revoked != nil {
		return nil, c.revoked
	}
	if c.st == nil {
		return nil, ErrClosed
	}
	return c.st, nil
}

func (c *Client) update(fn func(tx *stx) error) error {
	st, err := c.store()
	if err != nil {
		return err
	}
	return st.update(fn)
}

func (c *Client) view(fn func(tx *stx) error) error {
	st, err := c.store()
	if err != nil {
		return err
	}
	return st.view(fn)
}

// ErrNotEnrolled is returned by Sync, Run and writes when the replica has
// not been enrolled with a server yet.
var ErrNotEnrolled = errors.New("client: not enrolled; run 'casesync enroll --server URL --token T' first")

// ErrRevoked is returned when the server revoked this device; the replica
// was wiped. Errors.As a *RevokedError to learn how many changes were lost.
var ErrRevoked = errors.New("client: this device was revoked; its local data was wiped")

// RevokedError reports a wipe after revocation.
type RevokedError struct {
	// Lost is the number of local changes that had not reached the server;
	// -1 if it is not known (the notice a wipe left is damaged).
	Lost int
	// Rejected is the number of changes the server had refused that were
	// still listed for the user ('casesync rejected'): they never reached
	// the server either, and went with the replica.
	Rejected int
	// At is when the replica was wiped.
	At time.Time
}

func (e *RevokedError) Error() string {
	return "client: this device was revoked; its local data was wiped (" + e.Counts() + ")"
}

// Counts says what the wipe took with it, for a message to the user.
func (e *RevokedError) Counts() string {
	if e.Lost < 0 {
		return "an unknown number of unsynced changes lost"
	}
	s := fmt.Sprintf("%d unsynced changes lost", e.Lost)
	if e.Rejected > 0 {
		s += fmt.Sprintf(", %d rejected changes discarded", e.Rejected)
	}
	return s
}

// Unwrap makes errors.Is(err, ErrRevoked) true.
func (e *RevokedError) Unwrap() error { return ErrRevoked }

// Enroll binds the replica to a server with a device token from
// 'casesyncd admin device enroll'. serverURL is the server's base URL
// (http:// or https://).
func (c *Client) Enroll(ctx context.Context, serverURL, token string) error {
	base, err := url.Parse(strings.TrimRight(serverURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("client: server URL %q: use https://host:port (or http://127.0.0.1:port on this machine)", serverURL)
	}
	if base.Scheme == "http" && !c.opts.AllowInsecure && !loopback(base.Hostname()) {
		return fmt.Errorf("client: refusing http://%s: tokens and case notes would cross the network in clear; use https (or --insecure for a test network)", base.Host)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+"/v1/device", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("client: reach %s: %w", base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e syncproto.Error
		if json.Unmarshal(body, &e) == nil && e.Code != "" {
			return fmt.Errorf("client: enroll: %w", &e)
		}
		return fmt.Errorf("client: enroll: server answered %s", resp.Status)
	}
	var id struct {
		Device string          `json:"device"`
		User   string          `json:"user"`
		Role   string          `json:"role"`
		Scope  syncproto.Scope `json:"scope"`
	}
	if err := json.Unmarshal(body, &id); err != nil || !syncproto.ValidID(id.Device) {
		return fmt.Errorf("client: enroll: unexpected answer from %s", base)
	}
	// A revoked laptop the office enrolls again starts from an empty
	// replica; the notice goes once the new enrollment is stored.
	reopened, err := c.reopenRevoked()
	if err != nil {
		return err
	}
	err = c.update(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		if m.Device != "" && m.Device != id.Device {
			if n, _ := tx.outboxLen(); n > 0 {
				return fmt.Errorf("client: this replica belongs to device %s and has %d unsynced changes; sync them before enrolling another device", m.Device, n)
			}
		}
		if m.Device != id.Device {
			m = Meta{NextSeq: 1, ClockLast: m.ClockLast}
		}
		m.Device, m.User, m.Role, m.Scope = id.Device, id.User, id.Role, id.Scope
		m.Server, m.Token = base.String(), token
		if m.NextSeq == 0 {
			m.NextSeq = 1
		}
		return tx.putMeta(m)
	})
	if err != nil || !reopened {
		return err
	}
	return removeNotice(c.dir)
}

// Event tells a subscriber that records changed.
type Event struct {
	// Keys are the records that changed, if known.
	Keys []syncproto.Key
	// Remote is set when the change came from the server.
	Remote bool
}

// Subscribe returns a channel of events, for an app's screen to refresh
// when a sync brings news. Events are coalesced if the subscriber falls
// behind. cancel releases the subscription.
func (c *Client) Subscribe() (events <-chan Event, cancel func()) {
	ch := make(chan Event, 16)
	c.subsMu.Lock()
	c.subs[ch] = struct{}{}
	c.subsMu.Unlock()
	return ch, func() {
		c.subsMu.Lock()
		if _, ok := c.subs[ch]; ok {
			delete(c.subs, ch)
			close(ch)
		}
		c.subsMu.Unlock()
	}
}

func (c *Client) publish(ev Event) {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	for ch := range c.subs {
		select {
		case ch <- ev:
		default: // a slow subscriber gets the next event; it re-reads anyway
		}
	}
}

// Status is the replica's sync state, for the user to see.
type Status struct {
	Enrolled   bool                 `json:"enrolled"`
	Server     string               `json:"server,omitempty"`
	Device     string               `json:"device,omitempty"`
	User       string               `json:"user,omitempty"`
	Role       string               `json:"role,omitempty"`
	Areas      []string             `json:"areas,omitempty"`
	Connected  bool                 `json:"connected"`
	Pending    int                  `json:"pending"`
	Conflicts  int                  `json:"conflicts"`
	Rejected   int                  `json:"rejected"`
	LastSync   time.Time            `json:"last_sync,omitzero"`
	LastError  string               `json:"last_error,omitempty"`
	Checkpoint syncproto.Checkpoint `json:"checkpoint"`
}

// Status returns the replica's sync state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.view(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		s.Enrolled = m.Device != ""
		s.Server, s.Device, s.User, s.Role, s.Areas = m.Server, m.Device, m.User, m.Role, m.Scope.Areas
		s.LastSync, s.Checkpoint, s.LastError = m.LastSync, m.Checkpoint, m.LastError
		if s.Pending, err = tx.outboxLen(); err != nil {
			return err
		}
		rej, err := tx.rejected()
		if err != nil {
			return err
		}
		s.Rejected = len(rej)
		conflicts, err := c.conflicts(tx, m)
		s.Conflicts = len(conflicts)
		return err
	})
	c.statusMu.Lock()
	s.Connected = c.connected
	if c.lastErr != "" {
		s.LastError = c.lastErr
	}
	c.statusMu.Unlock()
	return s, err
}

func (c *Client) setConnected(v bool) {
	c.statusMu.Lock()
	c.connected = v
	c.statusMu.Unlock()
}

func (c *Client) setLastError(err error) {
	c.statusMu.Lock()
	if err == nil {
		c.lastErr = ""
	} else {
		c.lastErr = err.Error()
	}
	c.statusMu.Unlock()
}

// loopback reports whether host names this machine.
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
