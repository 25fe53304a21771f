package server

import (
	"crypto/sha256"
	"fmt"

	"github.com/casesync/casesync/syncproto"
)

// prepared is a pushed change with the work that depends on the change
// alone already done, on the session's goroutine, before the push reaches
// the store's single writer. The writer only reads it: a failed group
// commit runs the push's update again over the same prepared changes.
type prepared struct {
	// ch is the change with every value that parses in canonical form,
	// as ValidateChange would leave it.
	ch *syncproto.Change
	// invalid is Change.Validate's verdict: the change is rejected with it
	// before anything is read from the store.
	invalid error
	// digest identifies the change's content for resend detection.
	digest []byte
	// js is ch's encoding, which digest hashes and the log stores.
	js []byte
	// state is ch.State(device), for ch.Stamp as pushed.
	state *syncproto.Record

	// What the writer needs if the record does not exist yet (most pushed
	// changes are new notes), so that it neither validates nor encodes:
	// newInvalid is ValidateChange's verdict on the change as a record's
	// first (its case assumed to exist: the writer checks that), newRec the
	// record it makes, without its area, newFields newRec.Fields encoded,
	// and newConflicted whether newRec has open conflicts.
	newInvalid    error
	newRec        *syncproto.Record
	newFields     []byte
	newConflicted bool
}

// anyCase is the CaseIndex of validation before the push reaches the
// store: every case exists. The writer checks the case itself (changeArea)
// before it takes that verdict.
type anyCase struct{}

func (anyCase) CaseArea(string) (string, bool) { return "", true }

// prepare prepares the changes of a push, holding a CPU slot.
func (srv *Server) prepare(changes []syncproto.Change, actor syncproto.Actor) ([]prepared, error) {
	srv.cpu.take()
	defer srv.cpu.give()
	preps := make([]prepared, len(changes))
	for i := range changes {
		if err := preps[i].prepare(&changes[i], actor); err != nil {
			return nil, err
		}
	}
	return preps, nil
}

// prepare fills p from change c of actor. An error means the push cannot
// be applied at all; a change that breaks the protocol's rules is marked
// invalid instead and rejected alone.
func (p *prepared) prepare(c *syncproto.Change, actor syncproto.Actor) error {
	p.ch = cloneChange(c)
	if err := p.ch.Validate(); err != nil {
		p.invalid = err
		return nil
	}
	// A value that is not valid JSON stays as it is: ValidateChange rejects
	// it, in its own order among the change's other faults.
	for k, w := range p.ch.Fields {
		if v, err := syncproto.Canonical(w.Data); err == nil {
			w.Data = v
			p.ch.Fields[k] = w
		}
	}
	js, err := syncproto.Marshal(p.ch)
	if err != nil {
		return fmt.Errorf("encode change %d: %w", c.Seq, err)
	}
	sum := sha256.Sum256(js)
	p.digest, p.js = sum[:], js
	p.state = p.ch.State(actor.Device)

	// ValidateChange only canonicalises values in place, which is done.
	if p.newInvalid = syncproto.ValidateChange(p.ch, nil, actor, anyCase{}); p.newInvalid != nil {
		return nil
	}
	// Joined into nothing, the change's state is the new record: one value
	// per field, the field's context the change's (prepare_internal_test
	// checks this against Join). The area is the writer's to file: a
	// case's area field, an entry's case's area.
	p.newRec = &syncproto.Record{Collection: p.ch.Collection, ID: p.ch.ID, Fields: p.state.Fields}
	p.newConflicted = len(p.newRec.Conflicts()) > 0
	if p.newFields, err = syncproto.Marshal(p.newRec.Fields); err != nil {
		return fmt.Errorf("encode change %d: %w", c.Seq, err)
	}
	return nil
}

// newRecordJSON returns syncproto.Marshal of newRec filed under area,
// from the prepared encoding of its fields, and checks its size as
// encodeChecked does.
func (p *prepared) newRecordJSON(area string) ([]byte, error) {
	r := p.newRec
	if len(r.Fields) > syncproto.MaxFields {
		return nil, syncproto.Errorf(syncproto.ErrRecordTooLarge, "%s has %d fields; the limit is %d", r.Key(), len(r.Fields), syncproto.MaxFields)
	}
	// Record's encoding: coll, id, area unless empty, fields.
	b := make([]byte, 0, 32+len(r.Collection)+len(r.ID)+len(area)+len(p.newFields))
	b = append(b, `{"coll":`...)
	b = syncproto.AppendString(b, string(r.Collection))
	b = append(b, `,"id":`...)
	b = syncproto.AppendString(b, r.ID)
	if area != "" {
		b = append(b, `,"area":`...)
		b = syncproto.AppendString(b, area)
	}
	b = append(b, `,"fields":`...)
	b = append(append(b, p.newFields...), '}')
	if len(b) > syncproto.MaxRecord {
		return nil, syncproto.Errorf(syncproto.ErrRecordTooLarge, "%s would be %d bytes; the limit is %d", r.Key(), len(b), syncproto.MaxRecord)
	}
	return b, nil
}

func cloneChange(c *syncproto.Change) *syncproto.Change {
	out := *c
	out.Fields = make(map[string]syncproto.Write, len(c.Fields))
	for k, v := range c.Fields {
		out.Fields[k] = v
	}
	return &out
}

// encodeChecked encodes a record to store and checks its size with the
// same encoding, as syncproto.CheckSize does (one Marshal instead of two).
func encodeChecked(r *syncproto.Record) ([]byte, error) {
	if len(r.Fields) > syncproto.MaxFields {
		return nil, syncproto.Errorf(syncproto.ErrRecordTooLarge, "%s has %d fields; the limit is %d", r.Key(), len(r.Fields), syncproto.MaxFields)
	}
	b, err := syncproto.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	if len(b) > syncproto.MaxRecord {
		return nil, syncproto.Errorf(syncproto.ErrRecordTooLarge, "%s would be %d bytes; the limit is %d", r.Key(), len(b), syncproto.MaxRecord)
	}
	return b, nil
}

// encodeLogEntry encodes e as syncproto.Marshal(e) does, using change, if
// set, as the encoding of e.Change (syncproto.Marshal(e.Change)): spliced
// in as it is, not parsed and compacted again as a json.RawMessage would be.
func encodeLogEntry(e LogEntry, change []byte) ([]byte, error) {
	if change == nil {
		return syncproto.Marshal(e)
	}
	at, err := e.At.MarshalJSON()
	if err != nil {
		return nil, err
	}
	// LogEntry's encoding: device, user, area, change, at.
	b := make([]byte, 0, 64+len(e.Device)+len(e.User)+len(e.Area)+len(change)+len(at))
	b = append(b, `{"device":`...)
	b = syncproto.AppendString(b, e.Device)
	b = append(b, `,"user":`...)
	b = syncproto.AppendString(b, e.User)
	b = append(b, `,"area":`...)
	b = syncproto.AppendString(b, e.Area)
	b = append(append(b, `,"change":`...), change...)
	b = append(append(b, `,"at":`...), at...)
	return append(b, '}'), nil
}
