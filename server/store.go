package server

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// Store is where the server keeps everything: the change log, the current
// state of every record with per-area indexes, users, devices and tokens.
// The rules (validation, scope, merge, re-filing moved cases) live in the
// server; the store only keeps data, so another engine can replace bbolt by
// implementing this interface and Tx.
type Store interface {
	// Meta returns the store's identity, fixed when it was created.
	Meta() Meta
	// Update runs fn in a read-write transaction and commits it durably
	// (fsync) before returning. Concurrent callers may be committed together
	// in one transaction (group commit); fn may therefore run more than once
	// and must have no effects outside tx. If fn returns an error, none of
	// its writes are kept and Update returns that error.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(tx Tx) error) error
	// Close waits for pending updates and releases the store.
	Close() error
}

// Meta identifies a store.
type Meta struct {
	// ServerID names the server instance; stable across restarts.
	ServerID string
	// Epoch names the store's log. It changes only if the log is replaced,
	// which voids every client checkpoint.
	Epoch string
}

// Tx is a transaction on the store. Values returned by a Tx are copies owned
// by the caller. Methods that write fail on a read-only transaction.
type Tx interface {
	// Head returns the highest log sequence assigned so far.
	Head() (uint64, error)
	// NextSeq assigns the next log sequence.
	NextSeq() (uint64, error)
	// AppendLog records an accepted change under seq in the change log.
	AppendLog(seq uint64, e LogEntry) error
	// AppendLogJSON is AppendLog with the entry already encoded as
	// syncproto.Marshal encodes it (see encodeLogEntry). The store may keep
	// js until the transaction ends: the caller must not change it.
	AppendLogJSON(seq uint64, js []byte) error

	// Record returns the current state of a record and the log sequence it
	// is filed under, or ErrNotFound.
	Record(k syncproto.Key) (*syncproto.Record, uint64, error)
	// PutRecord stores r as the current state, filed under r.Area at seq,
	// replacing its previous filing. If r was filed under another area
	// before, an eviction marker pointing at r.Area is filed there at seq
	// instead; a marker for r in r.Area, left by an earlier move, is removed.
	PutRecord(r *syncproto.Record, seq uint64) error
	// PutRecordJSON is PutRecord with js, syncproto.Marshal(r), stored as
	// r's encoding instead of encoding r again.
	PutRecordJSON(r *syncproto.Record, js []byte, seq uint64) error
	// RecordArea returns the area a record is filed under, or ErrNotFound,
	// without decoding the record: for a case, the winner of its area field.
	RecordArea(k syncproto.Key) (string, error)
	// CaseEntries returns the IDs of the entries of a case.
	CaseEntries(caseID string) ([]string, error)
	// Scan calls fn for the items filed under the given areas with a
	// sequence greater than the area's value in after, and at most upTo, in
	// ascending sequence order, until fn returns false or an error.
	Scan(after map[string]uint64, upTo uint64, fn func(Item) (bool, error)) error
	// ScanRaw is Scan with each record as its stored JSON in Item.Raw, not
	// decoded into Item.Record; eviction markers have neither.
	ScanRaw(after map[string]uint64, upTo uint64, fn func(Item) (bool, error)) error
	// Areas returns every area that has ever had a record filed under it.
	Areas() ([]string, error)

	// Accepted returns the digest stored for a device's change, if the
	// change was accepted before.
	Accepted(device string, seq uint64) (digest []byte, ok bool, err error)
	// MarkAccepted stores a digest of an accepted change, so a resend is
	// recognised.
	MarkAccepted(device string, seq uint64, digest []byte) error

	// CaseMoves returns a case's area history, oldest first.
	CaseMoves(caseID string) ([]Move, error)
	// AddCaseMove appends to a case's area history.
	AddCaseMove(caseID string, m Move) error

	// SetConflict records whether a record has open conflicts, for the
	// admin view.
	SetConflict(k syncproto.Key, area string, open bool) error
	// Conflicts calls fn for each record with open conflicts.
	Conflicts(fn func(k syncproto.Key, area string) error) error

	// User returns a user, or ErrNotFound.
	User(name string) (User, error)
	// PutUser creates or replaces a user.
	PutUser(u User) error
	// Users returns every user, by name.
	Users() ([]User, error)
	// Device returns a device, or ErrNotFound.
	Device(id string) (Device, error)
	// DeviceByToken returns the device whose token hashes to hash, or ErrNotFound.
	DeviceByToken(hash []byte) (Device, error)
	// PutDevice creates or replaces a device and indexes its token hash.
	PutDevice(d Device) error
	// Devices returns every device, by ID.
	Devices() ([]Device, error)
}

// ErrNotFound is returned by Tx methods when a record, user or device does not exist.
var ErrNotFound = errors.New("server: not found")

// LogEntry is one accepted change as the log keeps it.
type LogEntry struct {
	Device string           `json:"device"`
	User   string           `json:"user"`
	Area   string           `json:"area"`
	Change syncproto.Change `json:"change"`
	At     time.Time        `json:"at"`
}

// Item is one entry of an area's index: a record's current state, or a
// marker that the record moved to another area.
type Item struct {
	Seq  uint64
	Area string // the area the item is filed under
	Key  syncproto.Key
	// Record is the current state; nil for an eviction marker, and from
	// ScanRaw.
	Record *syncproto.Record
	// Raw is the current state as stored JSON (syncproto.Marshal of the
	// record), from ScanRaw; nil for an eviction marker.
	Raw json.RawMessage
	// MovedTo is the record's new area, for an eviction marker.
	MovedTo string
}

// Move is one change of a case's area: a tenant was rehoused. The server
// keeps the history so that a note written offline about the case before it
// moved still reaches the case (PROTOCOL.md §7).
type Move struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Stamp is the stamp of the write that moved the case.
	Stamp syncproto.Stamp `json:"at"`
}

// User is a person who syncs.
type User struct {
	Name  string   `json:"name"`
	Role  string   `json:"role"`
	Areas []string `json:"areas"`
}

// Scope returns the areas u sees; known lists every area that exists, for leads.
func (u User) Scope(known []string) syncproto.Scope {
	if u.Role == syncproto.RoleLead {
		return syncproto.Scope{All: true, Areas: known}
	}
	return syncproto.Scope{Areas: u.Areas}
}

// Device is one enrolled laptop or phone.
type Device struct {
	ID        string    `json:"id"`
	User      string    `json:"user"`
	Label     string    `json:"label,omitempty"`
	TokenHash []byte    `json:"token_hash"`
	Created   time.Time `json:"created"`
	// Revoked is when the device was revoked; zero if it is active.
	Revoked time.Time `json:"revoked,omitzero"`
	// LastSeen is when the device last completed a handshake.
	LastSeen time.Time `json:"last_seen,omitzero"`
}
