package client

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/casesync/casesync/syncproto"
)

// View is a record as the user sees it: the server's state joined with the
// device's pending changes.
type View struct {
	Collection syncproto.Collection `json:"coll"`
	ID         string               `json:"id"`
	Area       string               `json:"area"`
	// Fields holds each field's winning value.
	Fields map[string]json.RawMessage `json:"fields"`
	// Conflicts lists fields with concurrent values awaiting a person.
	Conflicts []syncproto.Conflict `json:"conflicts,omitempty"`
	// Deleted is set for a deleted entry (a tombstone).
	Deleted bool `json:"deleted,omitempty"`
	// Pending is set while local changes to the record are not yet synced.
	Pending bool `json:"pending,omitempty"`
}

// String returns a string field's value.
func (v *View) String(field string) string {
	var s string
	_ = json.Unmarshal(v.Fields[field], &s)
	return s
}

func view(r *syncproto.Record, pending bool) *View {
	v := &View{Collection: r.Collection, ID: r.ID, Area: r.Area, Fields: make(map[string]json.RawMessage, len(r.Fields)), Pending: pending}
	for name := range r.Fields {
		if data, ok := r.Get(name); ok {
			v.Fields[name] = data
		}
	}
	v.Conflicts = r.Conflicts()
	v.Deleted = r.Deleted()
	return v
}

// visible returns the record as the user sees it: base joined with pending
// changes. It returns nil if neither exists.
func visible(tx *stx, m Meta, k syncproto.Key) (*syncproto.Record, bool, error) {
	base, ok, err := tx.record(k)
	if err != nil {
		return nil, false, err
	}
	pending, err := tx.outboxFor(k)
	if err != nil {
		return nil, false, err
	}
	if !ok && len(pending) == 0 {
		return nil, false, nil
	}
	if !ok {
		base = &syncproto.Record{Collection: k.Collection, ID: k.ID}
	}
	for i := range pending {
		base.Join(pending[i].State(m.Device))
	}
	if k.Collection == syncproto.Entries && base.Area == "" {
		if id, ok := base.String(syncproto.FieldCaseID); ok {
			if cr, _, err := visible(tx, m, syncproto.Key{Collection: syncproto.Cases, ID: id}); err == nil && cr != nil {
				base.Area = cr.Area
			}
		}
	}
	return base, len(pending) > 0, nil
}

// localCases answers validation's case lookups from the replica, each case
// read once per write (validation asks, then write asks for the area).
type localCases struct {
	tx    *stx
	m     Meta
	found map[string]caseFound
}

type caseFound struct {
	area string
	ok   bool
}

func newLocalCases(tx *stx, m Meta) *localCases {
	return &localCases{tx: tx, m: m, found: map[string]caseFound{}}
}

func (l *localCases) CaseArea(id string) (string, bool) {
	f, seen := l.found[id]
	if !seen {
		r, _, err := visible(l.tx, l.m, syncproto.Key{Collection: syncproto.Cases, ID: id})
		if err == nil && r != nil {
			f = caseFound{r.Area, true}
		}
		l.found[id] = f
	}
	return f.area, f.ok
}

// write makes a change to one record durable in the outbox, after checking
// it against the record model as the server will.
func (c *Client) write(k syncproto.Key, values map[string]any) error {
	raw := make(map[string]json.RawMessage, len(values))
	for name, v := range values {
		b, err := syncproto.Marshal(v)
		if err != nil {
			return fmt.Errorf("client: field %q: %w", name, err)
		}
		raw[name] = b
	}
	err := c.update(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		if m.Device == "" {
			return ErrNotEnrolled
		}
		cur, _, err := visible(tx, m, k)
		if err != nil {
			return err
		}
		if m.NextSeq == 0 {
			m.NextSeq = 1
		}
		ch := syncproto.Edit(cur, k.Collection, k.ID, m.NextSeq, c.clock.Now(), raw)
		cases := newLocalCases(tx, m)
		if err := syncproto.ValidateChange(&ch, cur, syncproto.Actor{User: m.User, Device: m.Device}, cases); err != nil {
			return err
		}
		area := ""
		if cur != nil {
			area = cur.Area
		} else if k.Collection == syncproto.Cases {
			_ = json.Unmarshal(ch.Fields[syncproto.FieldArea].Data, &area)
		} else {
			var caseID string
			_ = json.Unmarshal(ch.Fields[syncproto.FieldCaseID].Data, &caseID)
			area, _ = cases.CaseArea(caseID)
		}
		if !m.Scope.Contains(area) {
			return syncproto.Errorf(syncproto.ErrOutOfScope, "area %q is not one of yours", area)
		}
		m.NextSeq++
		m.ClockLast = c.clock.Last()
		if err := tx.appendOutbox(ch); err != nil {
			return err
		}
		return tx.putMeta(m)
	})
	if err != nil {
		return err
	}
	c.publish(Event{Keys: []syncproto.Key{k}})
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return nil
}

// CreateCase creates a case and returns its ID. fields must include area
// and title; status defaults to open and owner to the signed-in user.
func (c *Client) CreateCase(ctx context.Context, fields map[string]any) (string, error) {
	st, err := c.meta()
	if err != nil {
		return "", err
	}
	f := maps.Clone(fields)
	if _, ok := f[syncproto.FieldStatus]; !ok {
		f[syncproto.FieldStatus] = syncproto.StatusOpen
	}
	if _, ok := f[syncproto.FieldOwner]; !ok && st.User != "" {
		f[syncproto.FieldOwner] = st.User
	}
	id := c.ids.New()
	return id, c.write(syncproto.Key{Collection: syncproto.Cases, ID: id}, f)
}

// SetCase changes fields of a case. Setting area moves the case.
func (c *Client) SetCase(ctx context.Context, id string, fields map[string]any) error {
	if err := c.mustExist(ctx, syncproto.Key{Collection: syncproto.Cases, ID: id}); err != nil {
		return err
	}
	return c.write(syncproto.Key{Collection: syncproto.Cases, ID: id}, fields)
}

// AddEntry adds a journal entry to a case and returns its ID. fields must
// include kind and text; author is the signed-in user and occurred_at
// defaults to now.
func (c *Client) AddEntry(ctx context.Context, caseID string, fields map[string]any) (string, error) {
	st, err := c.meta()
	if err != nil {
		return "", err
	}
	f := maps.Clone(fields)
	f[syncproto.FieldCaseID] = caseID
	f[syncproto.FieldAuthor] = st.User
	if _, ok := f[syncproto.FieldOccurredAt]; !ok {
		f[syncproto.FieldOccurredAt] = c.opts.Now().UTC().Format(time.RFC3339)
	}
	id := c.ids.New()
	return id, c.write(syncproto.Key{Collection: syncproto.Entries, ID: id}, f)
}

// EditEntry changes fields of an entry the user wrote.
func (c *Client) EditEntry(ctx context.Context, id string, fields map[string]any) error {
	if err := c.mustExist(ctx, syncproto.Key{Collection: syncproto.Entries, ID: id}); err != nil {
		return err
	}
	return c.write(syncproto.Key{Collection: syncproto.Entries, ID: id}, fields)
}

// DeleteEntry deletes an entry the user wrote (a tombstone that syncs).
func (c *Client) DeleteEntry(ctx context.Context, id string) error {
	return c.EditEntry(ctx, id, map[string]any{syncproto.FieldDeleted: true})
}

// meta reads the replica's own state.
func (c *Client) meta() (Meta, error) {
	var m Meta
	err := c.view(func(tx *stx) error {
		var err error
		m, err = tx.meta()
		return err
	})
	return m, err
}

// ErrNotFound is returned when a record is not on this device.
var ErrNotFound = fmt.Errorf("client: no such record on this device")

func (c *Client) mustExist(ctx context.Context, k syncproto.Key) error {
	_, err := c.Get(ctx, k)
	return err
}

// Get returns a record as the user sees it.
func (c *Client) Get(ctx context.Context, k syncproto.Key) (*View, error) {
	var v *View
	err := c.view(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		r, pending, err := visible(tx, m, k)
		if err != nil {
			return err
		}
		if r == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, k)
		}
		v = view(r, pending)
		return nil
	})
	return v, err
}

// Find returns the record with ID id, a case or an entry.
func (c *Client) Find(ctx context.Context, id string) (*View, error) {
	v, err := c.Get(ctx, syncproto.Key{Collection: syncproto.Cases, ID: id})
	if err == nil {
		return v, nil
	}
	return c.Get(ctx, syncproto.Key{Collection: syncproto.Entries, ID: id})
}

// Filter selects cases.
type Filter struct {
	Area   string
	Status string
	// Search matches, case-insensitively, any text field of the case or
	// of its entries.
	Search string
}

// Cases lists the cases that match f, most recently created first.
func (c *Client) Cases(ctx context.Context, f Filter) ([]*View, error) {
	var out []*View
	err := c.view(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		all, err := allVisible(tx, m)
		if err != nil {
			return err
		}
		q := strings.ToLower(f.Search)
		hits := map[string]bool{}
		if q != "" {
			for _, r := range all {
				if r.Collection == syncproto.Entries && !r.Deleted() && matches(r.Record, q) {
					id, _ := r.String(syncproto.FieldCaseID)
					hits[id] = true
				}
			}
		}
		for _, r := range all {
			if r.Collection != syncproto.Cases {
				continue
			}
			if f.Area != "" && r.Area != f.Area {
				continue
			}
			if s, _ := r.String(syncproto.FieldStatus); f.Status != "" && s != f.Status {
				continue
			}
			if q != "" && !hits[r.ID] && !matches(r.Record, q) {
				continue
			}
			out = append(out, view(r.Record, r.pending))
		}
		return nil
	})
	slices.SortFunc(out, func(a, b *View) int { return strings.Compare(b.ID, a.ID) })
	return out, err
}

// Entries lists a case's journal, oldest first, deleted entries left out.
func (c *Client) Entries(ctx context.Context, caseID string) ([]*View, error) {
	var out []*View
	err := c.view(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		all, err := allVisible(tx, m)
		if err != nil {
			return err
		}
		for _, r := range all {
			if id, _ := r.String(syncproto.FieldCaseID); r.Collection == syncproto.Entries && id == caseID && !r.Deleted() {
				out = append(out, view(r.Record, r.pending))
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b *View) int {
		if x := strings.Compare(a.String(syncproto.FieldOccurredAt), b.String(syncproto.FieldOccurredAt)); x != 0 {
			return x
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, err
}

func matches(r *syncproto.Record, q string) bool {
	for _, f := range r.Fields {
		if v, ok := f.Winner(); ok && bytes.Contains(bytes.ToLower(v.Data), []byte(q)) {
			return true
		}
	}
	return false
}

// shown is a record as the user sees it, and whether changes to it are
// still unsynced.
type shown struct {
	*syncproto.Record
	pending bool
}

// allVisible returns every record as the user sees it, ordered by key.
// Each record is decrypted once: those with pending changes are joined with
// them, the rest are shown as confirmed.
func allVisible(tx *stx, m Meta) ([]shown, error) {
	pending, err := tx.pendingKeys()
	if err != nil {
		return nil, err
	}
	joined := make(map[syncproto.Key]bool, len(pending))
	for _, k := range pending {
		joined[k] = true
	}
	var out []shown
	err = tx.forEachRecord(func(r *syncproto.Record) error {
		k := r.Key()
		if joined[k] {
			return nil // below, with its pending changes
		}
		if ev, err := tx.isEvicted(k); err != nil || ev {
			return err // left the device's scope
		}
		out = append(out, shown{r, false})
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range pending {
		if ev, err := tx.isEvicted(k); err != nil {
			return nil, err
		} else if ev {
			continue // left the device's scope; its pending changes are still pushed
		}
		r, isPending, err := visible(tx, m, k)
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, shown{r, isPending})
		}
	}
	slices.SortFunc(out, func(a, b shown) int {
		return cmp.Or(strings.Compare(string(a.Collection), string(b.Collection)), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// RecordConflict is a record with open conflicts.
type RecordConflict struct {
	Key       syncproto.Key        `json:"key"`
	Area      string               `json:"area"`
	Conflicts []syncproto.Conflict `json:"conflicts"`
}

// Conflicts lists the records with open conflicts.
func (c *Client) Conflicts(ctx context.Context) ([]RecordConflict, error) {
	var out []RecordConflict
	err := c.view(func(tx *stx) error {
		m, err := tx.meta()
		if err != nil {
			return err
		}
		out, err = c.conflicts(tx, m)
		return err
	})
	return out, err
}

func (c *Client) conflicts(tx *stx, m Meta) ([]RecordConflict, error) {
	keys, err := tx.conflictCandidates()
	if err != nil {
		return nil, err
	}
	var out []RecordConflict
	for _, k := range keys {
		if ev, err := tx.isEvicted(k); err != nil {
			return nil, err
		} else if ev {
			continue // left the device's scope
		}
		r, _, err := visible(tx, m, k)
		if err != nil {
			return nil, err
		}
		if r == nil {
			continue
		}
		if cs := r.Conflicts(); len(cs) > 0 {
			out = append(out, RecordConflict{Key: r.Key(), Area: r.Area, Conflicts: cs})
		}
	}
	return out, nil
}

// ValueID names one value of a conflicted field: "device:seq".
func ValueID(v syncproto.Value) string { return fmt.Sprintf("%s:%d", v.Device, v.Seq) }

// ErrNoConflict is returned by Resolve for a field without a conflict.
var ErrNoConflict = fmt.Errorf("client: that field has no conflict")

// Resolve settles a conflict on one field of record id: with keep (a
// ValueID) it keeps that value, otherwise it writes value. The resolution
// is an ordinary change that syncs to everyone.
func (c *Client) Resolve(ctx context.Context, id, field, keep string, value any) error {
	v, err := c.Find(ctx, id)
	if err != nil {
		return err
	}
	var conflict *syncproto.Conflict
	for i := range v.Conflicts {
		if v.Conflicts[i].Field == field {
			conflict = &v.Conflicts[i]
		}
	}
	if conflict == nil {
		return fmt.Errorf("%w: %s.%s", ErrNoConflict, id, field)
	}
	if keep != "" {
		found := false
		for _, val := range conflict.Values {
			if ValueID(val) == keep {
				value, found = json.RawMessage(val.Data), true
			}
		}
		if !found {
			return fmt.Errorf("client: %s.%s has no value %q; see 'casesync conflicts'", id, field, keep)
		}
	}
	return c.write(syncproto.Key{Collection: v.Collection, ID: v.ID}, map[string]any{field: value})
}

// Rejected lists local changes the server refused, with its reasons.
func (c *Client) Rejected(ctx context.Context) ([]Rejected, error) {
	var out []Rejected
	err := c.view(func(tx *stx) error {
		var err error
		out, err = tx.rejected()
		return err
	})
	return out, err
}

// Dismiss removes a rejected change once the user has dealt with it.
func (c *Client) Dismiss(ctx context.Context, seq uint64) error {
	return c.update(func(tx *stx) error { return tx.removeRejected(seq) })
}
