package syncproto

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Type identifies a message in a frame header.
type Type uint8

// The message types. A receiver skips a type it does not know, so newer
// peers can add messages without breaking older ones.
const (
	TypeHello    Type = 1 // client → server: first message of a session
	TypeWelcome  Type = 2 // server → client: handshake accepted
	TypeError    Type = 3 // either way: a typed error
	TypePush     Type = 4 // client → server: a batch of changes
	TypeAck      Type = 5 // server → client: outcome of a push
	TypeChanges  Type = 6 // server → client: record states and evictions
	TypeCaughtUp Type = 7 // server → client: the backlog is sent; live changes follow
	TypeScope    Type = 8 // server → client: the user's areas changed
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeWelcome:
		return "welcome"
	case TypeError:
		return "error"
	case TypePush:
		return "push"
	case TypeAck:
		return "ack"
	case TypeChanges:
		return "changes"
	case TypeCaughtUp:
		return "caught_up"
	case TypeScope:
		return "scope"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Message is a protocol message. Validate reports a message that decoded
// but breaks the protocol's rules; the codec calls it on every decode.
type Message interface {
	Type() Type
	Validate() error
}

// Protocol-wide hard limits. A peer may announce lower ones in Limits.
const (
	// MaxPayload is the largest decoded frame payload either side accepts.
	MaxPayload = 16 << 20
	// MaxHelloPayload is the largest hello or welcome payload.
	MaxHelloPayload = 64 << 10
	// MaxBatch is the largest number of changes in one push.
	MaxBatch = 5000
	// MaxAreas is the largest number of areas in a scope or checkpoint.
	MaxAreas = 500
	// MaxMessage is the longest human-readable error message.
	MaxMessage = 4 << 10
)

// Checkpoint is how far a replica has pulled: the server's epoch and log
// sequence, and the areas the sequence covers. A checkpoint from another
// epoch, or for areas the replica did not hold, means pulling those from
// the beginning.
type Checkpoint struct {
	Epoch string   `json:"epoch,omitempty"`
	Seq   uint64   `json:"seq"`
	Areas []string `json:"areas,omitempty"`
}

// Validate checks the checkpoint's fields.
func (c Checkpoint) Validate() error {
	if len(c.Epoch) > MaxIDLen {
		return Errorf(ErrMalformed, "checkpoint epoch longer than %d bytes", MaxIDLen)
	}
	return validAreas("checkpoint", c.Areas)
}

// Scope is the set of areas a user sees. All is set for leads, who see
// every area; Areas then lists the areas that exist now.
type Scope struct {
	All   bool     `json:"all,omitempty"`
	Areas []string `json:"areas"`
}

// Contains reports whether the scope covers area.
func (s Scope) Contains(area string) bool { return s.All || slices.Contains(s.Areas, area) }

// Validate checks the scope's area names.
func (s Scope) Validate() error { return validAreas("scope", s.Areas) }

func validAreas(what string, areas []string) error {
	if len(areas) > MaxAreas {
		return Errorf(ErrMalformed, "%s lists %d areas; the limit is %d", what, len(areas), MaxAreas)
	}
	for _, a := range areas {
		if !ValidArea(a) {
			return Errorf(ErrMalformed, "%s names an invalid area %q", what, a)
		}
	}
	return nil
}

// Hello opens a session. The device token travels in the WebSocket upgrade
// request, not here.
type Hello struct {
	Version     int        `json:"version"`
	Device      string     `json:"device"`
	Checkpoint  Checkpoint `json:"checkpoint"`
	Compression []string   `json:"compression,omitempty"`
	// Time is the client's wall clock, milliseconds since the Unix epoch.
	Time int64 `json:"time"`
	// Live asks the server to keep streaming changes after caught_up.
	Live  bool   `json:"live,omitempty"`
	Agent string `json:"agent,omitempty"`
}

func (*Hello) Type() Type { return TypeHello }

// Validate checks the hello's fields. The version is checked by Negotiate,
// not here, so that a peer of another version gets ErrTooOldVersion or
// ErrUnknownVersion rather than a parse error.
func (h *Hello) Validate() error {
	if !ValidID(h.Device) {
		return Errorf(ErrMalformed, "hello: device %q is not a device ID", h.Device)
	}
	if len(h.Compression) > 8 || len(h.Agent) > 128 {
		return Errorf(ErrMalformed, "hello: compression list or agent too long")
	}
	return h.Checkpoint.Validate()
}

// Limits are the server's limits for this session.
type Limits struct {
	// MaxPayload is the largest decoded frame payload the server accepts.
	MaxPayload int `json:"max_payload"`
	// MaxBatch is the largest number of changes in one push.
	MaxBatch int `json:"max_batch"`
	// MaxRecord is the largest record state, in bytes.
	MaxRecord int `json:"max_record"`
	// MaxText is the largest text field, in bytes.
	MaxText int `json:"max_text"`
	// Rate is the sustained number of changes per second a device may push.
	Rate int `json:"rate"`
}

// Welcome accepts a hello.
type Welcome struct {
	Version  int    `json:"version"`
	ServerID string `json:"server_id"`
	// Epoch identifies the server's log. A checkpoint from another epoch is void.
	Epoch  string `json:"epoch"`
	User   string `json:"user"`
	Role   string `json:"role"`
	Scope  Scope  `json:"scope"`
	Limits Limits `json:"limits"`
	// Compression is the compression chosen from the hello's list, or "".
	Compression string `json:"compression,omitempty"`
	// Time is the server's wall clock, milliseconds since the Unix epoch.
	Time int64 `json:"time"`
	// Seq is the head of the server's log when the session began.
	Seq uint64 `json:"seq"`
}

// Roles.
const (
	RoleCaseworker = "caseworker" // sees the areas assigned to them
	RoleLead       = "lead"       // sees every area
)

func (*Welcome) Type() Type { return TypeWelcome }

// Validate checks the welcome's fields.
func (w *Welcome) Validate() error {
	if w.ServerID == "" || w.Epoch == "" || len(w.Epoch) > MaxIDLen {
		return Errorf(ErrMalformed, "welcome: server_id and epoch are required")
	}
	if w.Limits.MaxPayload <= 0 || w.Limits.MaxBatch <= 0 {
		return Errorf(ErrMalformed, "welcome: limits must be positive")
	}
	return w.Scope.Validate()
}

func (*Error) Type() Type { return TypeError }

// Validate checks the error's fields. Codes this version does not know are
// allowed: a newer peer may send them, and the receiver treats them as
// CodeInternal.
func (e *Error) Validate() error {
	if e.Code == "" || len(e.Code) > 32 || len(e.Reason) > 64 || len(e.Message) > MaxMessage {
		return Errorf(ErrMalformed, "error: code required; code, reason or message too long")
	}
	return nil
}

// Push carries changes from a client, in the order the device made them.
type Push struct {
	Changes []Change `json:"changes"`
}

func (*Push) Type() Type { return TypePush }

// Validate checks the push's shape: 1 to MaxBatch changes, each with a
// non-zero sequence number that does not repeat. Each change's own rules
// are checked per change by the receiver (ValidateChange), so that one bad
// change is rejected alone in the ack and the session goes on: a push that
// ended the session would be resent, and fail, forever.
func (p *Push) Validate() error {
	if len(p.Changes) == 0 {
		return Errorf(ErrMalformed, "push: no changes")
	}
	if len(p.Changes) > MaxBatch {
		return Errorf(ErrBatchTooLarge, "push: %d changes; the limit is %d", len(p.Changes), MaxBatch)
	}
	seen := make(map[uint64]struct{}, len(p.Changes))
	for i := range p.Changes {
		s := p.Changes[i].Seq
		if s == 0 {
			return Errorf(ErrBadChange, "push: a change has sequence 0; devices number changes from 1")
		}
		if _, dup := seen[s]; dup {
			return Errorf(ErrBadChange, "push: change %d appears twice", s)
		}
		seen[s] = struct{}{}
	}
	return nil
}

// Validate checks the change's shape: sequence, identity, stamp and field
// names. ValidateChange checks it against the record model.
func (c *Change) Validate() error {
	if c.Seq == 0 {
		return Errorf(ErrBadChange, "change has sequence 0; devices number changes from 1")
	}
	bad := func(err *Error) error { err.Change = c.Seq; return err }
	if !c.Collection.Known() {
		return bad(Errorf(ErrUnknownCollection, "collection %q is not one of cases, entries", c.Collection))
	}
	if !ValidID(c.ID) {
		return bad(Errorf(ErrBadID, "record ID %q: use 1 to %d letters, digits, '-' or '_'", c.ID, MaxIDLen))
	}
	if c.Stamp == 0 {
		return bad(Errorf(ErrBadChange, "change %d has no stamp", c.Seq))
	}
	if len(c.Fields) == 0 || len(c.Fields) > MaxFields {
		return bad(Errorf(ErrBadChange, "change %d writes %d fields; it must write 1 to %d", c.Seq, len(c.Fields), MaxFields))
	}
	for name, w := range c.Fields {
		if name == "" || len(name) > 63 {
			return bad(Errorf(ErrBadField, "field name %q is empty or longer than 63 bytes", name))
		}
		if len(w.Data) == 0 {
			return bad(fieldErr(Errorf(ErrBadValue, "field %q has no value", name), name))
		}
		if err := validVersions(w.Seen); err != nil {
			return bad(fieldErr(err, name))
		}
		if err := validVersions(w.Covers); err != nil {
			return bad(fieldErr(err, name))
		}
	}
	return nil
}

func validVersions(v Versions) *Error {
	for d := range v {
		if !ValidID(d) {
			return Errorf(ErrBadID, "version vector names an invalid device %q", d)
		}
	}
	return nil
}

// Ack answers a push once every accepted change in it is durable on the
// server. Each change of the push is either accepted or rejected.
type Ack struct {
	Accepted []uint64 `json:"accepted,omitempty"`
	Rejected []Error  `json:"rejected,omitempty"`
	// Seq is the server's log head after the push committed.
	Seq uint64 `json:"seq"`
}

func (*Ack) Type() Type { return TypeAck }

// Validate checks that every rejection names its change.
func (a *Ack) Validate() error {
	for i := range a.Rejected {
		if a.Rejected[i].Change == 0 {
			return Errorf(ErrMalformed, "ack: rejection without a change sequence")
		}
		if err := a.Rejected[i].Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Eviction tells a client to remove a record it may no longer see.
type Eviction struct {
	Collection Collection `json:"coll"`
	ID         string     `json:"id"`
	// Area is where the record went, for a moved case or entry.
	Area string `json:"area,omitempty"`
}

// Key returns the key of the evicted record.
func (e Eviction) Key() Key { return Key{e.Collection, e.ID} }

// Changes carries record states and evictions, and the checkpoint a client
// reaches once it has applied them all.
type Changes struct {
	Records []Record `json:"records,omitempty"`
	// Raw holds more record states, already encoded as Marshal encodes a
	// Record: a sender that keeps records as JSON (the server's store)
	// sends them as they are instead of decoding and encoding them again.
	// They go on the wire in "records" after Records, so a receiver
	// cannot tell them apart; decoding fills Records, never Raw.
	Raw        []json.RawMessage `json:"-"`
	Evicted    []Eviction        `json:"evicted,omitempty"`
	Checkpoint Checkpoint        `json:"checkpoint"`
}

func (*Changes) Type() Type { return TypeChanges }

// MarshalJSON encodes c as its fields' tags say, with Raw appended to
// records. Without Raw the bytes are those of the plain encoding.
func (c Changes) MarshalJSON() ([]byte, error) { return c.appendJSON(nil) }

// appendJSON appends c's encoding to b. Codec.Encode calls it directly:
// through MarshalJSON, encoding/json would parse and compact the result,
// every record again.
func (c *Changes) appendJSON(b []byte) ([]byte, error) {
	size := 64
	for _, r := range c.Raw {
		size += len(r) + 1
	}
	b = slices.Grow(b, size)
	b = append(b, '{')
	if len(c.Records)+len(c.Raw) > 0 {
		b = append(b, `"records":[`...)
		for i := range c.Records {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = c.Records[i].appendJSON(b); err != nil {
				return nil, err
			}
		}
		for i, r := range c.Raw {
			if len(r) == 0 {
				return nil, fmt.Errorf("syncproto: changes: raw record %d is empty", i)
			}
			if i > 0 || len(c.Records) > 0 {
				b = append(b, ',')
			}
			b = append(b, r...)
		}
		b = append(b, "],"...)
	}
	if len(c.Evicted) > 0 {
		js, err := Marshal(c.Evicted)
		if err != nil {
			return nil, err
		}
		b = append(append(b, `"evicted":`...), js...)
		b = append(b, ',')
	}
	js, err := Marshal(c.Checkpoint)
	if err != nil {
		return nil, err
	}
	b = append(append(b, `"checkpoint":`...), js...)
	return append(b, '}'), nil
}

// Validate checks every record's identity and field values' shape.
func (c *Changes) Validate() error {
	for i := range c.Records {
		if err := c.Records[i].Validate(); err != nil {
			return err
		}
	}
	for _, e := range c.Evicted {
		if !e.Collection.Known() || !ValidID(e.ID) {
			return Errorf(ErrMalformed, "changes: eviction of %s/%s names no record", e.Collection, e.ID)
		}
	}
	return c.Checkpoint.Validate()
}

// Validate checks a record state's identity and shape.
func (r *Record) Validate() error {
	if !r.Collection.Known() || !ValidID(r.ID) {
		return Errorf(ErrMalformed, "record %s/%s: unknown collection or bad ID", r.Collection, r.ID)
	}
	if r.Area != "" && !ValidArea(r.Area) {
		return Errorf(ErrMalformed, "record %s: invalid area %q", r.Key(), r.Area)
	}
	if len(r.Fields) > MaxFields {
		return Errorf(ErrRecordTooLarge, "record %s has %d fields", r.Key(), len(r.Fields))
	}
	for name, f := range r.Fields {
		if err := validVersions(f.Seen); err != nil {
			return err
		}
		for _, v := range f.Values {
			if !ValidID(v.Device) || v.Seq == 0 || len(v.Data) == 0 || !f.Seen.Covers(v.Dot()) {
				return Errorf(ErrMalformed, "record %s field %q: value without a device, sequence or data, or outside the field's context", r.Key(), name)
			}
			if err := validVersions(v.Covers); err != nil {
				return err
			}
		}
	}
	return nil
}

// CaughtUp tells a client the backlog up to Checkpoint is sent. In a live
// session, changes that follow are live.
type CaughtUp struct {
	Checkpoint Checkpoint `json:"checkpoint"`
}

func (*CaughtUp) Type() Type { return TypeCaughtUp }

// Validate checks the checkpoint.
func (c *CaughtUp) Validate() error { return c.Checkpoint.Validate() }

// ScopeUpdate tells a client its user's areas changed. The client removes
// every record of the areas in Lost; records of gained areas arrive as
// changes.
type ScopeUpdate struct {
	Scope Scope    `json:"scope"`
	Lost  []string `json:"lost,omitempty"`
}

func (*ScopeUpdate) Type() Type { return TypeScope }

// Validate checks the area names.
func (s *ScopeUpdate) Validate() error {
	if err := s.Scope.Validate(); err != nil {
		return err
	}
	return validAreas("scope lost", s.Lost)
}

// Unknown is a message of a type this version does not define. The decoder
// returns it instead of an error; receivers skip it.
type Unknown struct {
	T Type
}

func (u *Unknown) Type() Type { return u.T }

// Validate accepts any unknown message.
func (*Unknown) Validate() error { return nil }

// newMessage returns an empty message of type t, or nil if t is unknown.
func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeWelcome:
		return new(Welcome)
	case TypeError:
		return new(Error)
	case TypePush:
		return new(Push)
	case TypeAck:
		return new(Ack)
	case TypeChanges:
		return new(Changes)
	case TypeCaughtUp:
		return new(CaughtUp)
	case TypeScope:
		return new(ScopeUpdate)
	}
	return nil
}
