package syncproto

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"
	"unicode/utf8"
)

// Collection names a kind of record.
type Collection string

// The collections.
const (
	// Cases are case files: one tenant's situation, owned by a caseworker.
	Cases Collection = "cases"
	// Entries are a case's journal: visits, calls, letters, referrals, notes.
	Entries Collection = "entries"
)

// Field names of cases.
const (
	FieldTitle      = "title"
	FieldTenant     = "tenant"
	FieldAddress    = "address"
	FieldArea       = "area"
	FieldStatus     = "status"
	FieldOwner      = "owner"
	FieldTags       = "tags"
	FieldSummary    = "summary"
	FieldNextAction = "next_action"
)

// Field names of entries.
const (
	FieldCaseID     = "case_id"
	FieldKind       = "kind"
	FieldAuthor     = "author"
	FieldOccurredAt = "occurred_at"
	FieldText       = "text"
	FieldReferredTo = "referred_to"
	FieldFollowUp   = "follow_up"
)

// FieldDeleted is the tombstone field of entries: true deletes the entry,
// false restores it.
const FieldDeleted = "_deleted"

// Case statuses.
const (
	StatusOpen    = "open"
	StatusWaiting = "waiting"
	StatusClosed  = "closed"
)

// Statuses lists the case statuses.
var Statuses = []string{StatusOpen, StatusWaiting, StatusClosed}

// Entry kinds.
const (
	KindVisit       = "visit"
	KindCall        = "call"
	KindOfficeHours = "office_hours"
	KindLetter      = "letter"
	KindReferral    = "referral"
	KindTeamMeeting = "team_meeting"
	KindNote        = "note"
)

// Kinds lists the entry kinds.
var Kinds = []string{KindVisit, KindCall, KindOfficeHours, KindLetter, KindReferral, KindTeamMeeting, KindNote}

// Size limits of the record model.
const (
	// MaxText is the largest text or summary, in bytes.
	MaxText = 64 << 10
	// MaxString is the largest short string field (title, tenant, …), in bytes.
	MaxString = 1 << 10
	// MaxTags is the largest number of tags on a case.
	MaxTags = 32
	// MaxRecord is the largest record state, in bytes of its JSON encoding.
	MaxRecord = 256 << 10
	// MaxFields is the largest number of fields in a record.
	MaxFields = 64
)

type fieldType uint8

const (
	typeString   fieldType = iota // short string
	typeText                      // long text
	typeArea                      // area name
	typeID                        // record ID
	typeEnum                      // one of a list
	typeDate                      // YYYY-MM-DD or null
	typeDateTime                  // RFC 3339 or YYYY-MM-DD
	typeTags                      // array of short strings
	typeBool                      // true or false
	typeAny                       // extra field: any JSON
)

type fieldSpec struct {
	typ       fieldType
	enum      []string
	required  bool // on creation
	immutable bool // fixed at creation
	nullable  bool
}

var schemas = map[Collection]map[string]fieldSpec{
	Cases: {
		FieldTitle:      {typ: typeString, required: true},
		FieldTenant:     {typ: typeString, nullable: true},
		FieldAddress:    {typ: typeString, nullable: true},
		FieldArea:       {typ: typeArea, required: true},
		FieldStatus:     {typ: typeEnum, enum: Statuses, required: true},
		FieldOwner:      {typ: typeString, nullable: true},
		FieldTags:       {typ: typeTags, nullable: true},
		FieldSummary:    {typ: typeText, nullable: true},
		FieldNextAction: {typ: typeDate, nullable: true},
	},
	Entries: {
		FieldCaseID:     {typ: typeID, required: true, immutable: true},
		FieldKind:       {typ: typeEnum, enum: Kinds, required: true, immutable: true},
		FieldAuthor:     {typ: typeString, required: true, immutable: true},
		FieldOccurredAt: {typ: typeDateTime, required: true},
		FieldText:       {typ: typeText, required: true},
		FieldReferredTo: {typ: typeString, nullable: true},
		FieldFollowUp:   {typ: typeDate, nullable: true},
		FieldDeleted:    {typ: typeBool},
	},
}

// extraField matches the names of free extra fields.
var extraField = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Known reports whether c is a collection this version defines.
func (c Collection) Known() bool { _, ok := schemas[c]; return ok }

// Actor is who makes a change: the authenticated user and device.
type Actor struct {
	User   string
	Device string
}

// CaseIndex tells validation whether a case exists and in which area, so
// that an entry can be checked against its case and take its case's area.
type CaseIndex interface {
	CaseArea(id string) (area string, ok bool)
}

// ValidateChange checks change c, made by actor, against the record model
// and against cur, the record's current state (nil if it does not exist
// yet). It canonicalises every value in place. Scope is not its concern:
// the server checks that separately. The returned error is an *Error whose
// Field names the offending field where there is one.
func ValidateChange(c *Change, cur *Record, actor Actor, cases CaseIndex) error {
	if err := c.Validate(); err != nil {
		return err
	}
	schema := schemas[c.Collection]
	exists := cur != nil && len(cur.Fields) > 0
	for _, name := range slices.Sorted(maps.Keys(c.Fields)) {
		w := c.Fields[name]
		if w.Seen[actor.Device] >= c.Seq {
			return fieldErr(Errorf(ErrBadChange, "change %d claims to replace its own or a later write of this device", c.Seq), name)
		}
		if len(w.Covers) > 0 && name != FieldDeleted {
			return fieldErr(Errorf(ErrBadChange, "covers is allowed only on %s", FieldDeleted), name)
		}
		if name == FieldDeleted && c.Collection == Cases {
			return fieldErr(Errorf(ErrNotDeletable, "cases cannot be deleted; set status to closed"), name)
		}
		spec, known := schema[name]
		if !known {
			if !extraField.MatchString(name) {
				return fieldErr(Errorf(ErrBadField, "field name %q: use lowercase letters, digits and '_', starting with a letter, at most 63 bytes", name), name)
			}
			spec = fieldSpec{typ: typeAny, nullable: true}
		}
		data, err := checkValue(name, spec, w.Data)
		if err != nil {
			return fieldErr(err, name)
		}
		w.Data = data
		c.Fields[name] = w
		if spec.immutable && exists {
			if old, ok := cur.Get(name); ok && !bytes.Equal(old, data) {
				return fieldErr(Errorf(ErrImmutable, "%s.%s cannot change after creation", c.Collection, name), name)
			}
		}
	}
	if !exists {
		for _, name := range slices.Sorted(maps.Keys(schema)) {
			if _, ok := c.Fields[name]; schema[name].required && !ok {
				return fieldErr(Errorf(ErrMissingField, "new %s record needs field %q", c.Collection, name), name)
			}
		}
		if v, ok := c.Fields[FieldDeleted]; ok && bytes.Equal(v.Data, jsonTrue) {
			return fieldErr(Errorf(ErrBadChange, "a new entry cannot be created deleted"), FieldDeleted)
		}
	}
	if c.Collection == Entries {
		return validateEntry(c, cur, exists, actor, cases)
	}
	return nil
}

func validateEntry(c *Change, cur *Record, exists bool, actor Actor, cases CaseIndex) error {
	view := func(name string) (json.RawMessage, bool) {
		if w, ok := c.Fields[name]; ok {
			return w.Data, true
		}
		if exists {
			return cur.Get(name)
		}
		return nil, false
	}
	author, _ := view(FieldAuthor)
	var who string
	_ = json.Unmarshal(author, &who)
	if who != actor.User {
		if exists {
			return fieldErr(Errorf(ErrNotAuthor, "entry %s was written by another user; only its author may edit it", c.ID), FieldAuthor)
		}
		return fieldErr(Errorf(ErrNotAuthor, "a new entry's author must be the signed-in user %q", actor.User), FieldAuthor)
	}
	if kind, _ := view(FieldKind); string(kind) == `"`+KindReferral+`"` {
		if to, ok := view(FieldReferredTo); !ok || string(to) == "null" || string(to) == `""` {
			return fieldErr(Errorf(ErrMissingField, "a referral needs field %q", FieldReferredTo), FieldReferredTo)
		}
	}
	caseID, _ := view(FieldCaseID)
	var id string
	_ = json.Unmarshal(caseID, &id)
	if cases != nil {
		if _, ok := cases.CaseArea(id); !ok {
			return fieldErr(Errorf(ErrUnknownCase, "entry %s names case %q, which does not exist", c.ID, id), FieldCaseID)
		}
	}
	return nil
}

func fieldErr(e *Error, field string) *Error {
	e.Field = field
	return e
}

// checkValue validates one field value and returns it in canonical form.
func checkValue(name string, spec fieldSpec, raw json.RawMessage) (json.RawMessage, *Error) {
	if len(raw) == 0 {
		return nil, Errorf(ErrBadValue, "field %q has no value", name)
	}
	data, err := Canonical(raw)
	if err != nil {
		return nil, Errorf(ErrBadValue, "field %q: value is not valid JSON", name)
	}
	if string(data) == "null" {
		if spec.nullable {
			return data, nil
		}
		return nil, Errorf(ErrBadValue, "field %q cannot be null", name)
	}
	str := func() (string, *Error) {
		if n := len(data); n >= 2 && data[0] == '"' && data[n-1] == '"' && bytes.IndexByte(data[1:n-1], '\\') < 0 {
			// A canonical string without escapes is its bytes between the
			// quotes: no need for encoding/json, a tenth of a push's CPU.
			return string(data[1 : n-1]), nil
		}
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return "", Errorf(ErrBadValue, "field %q must be a string", name)
		}
		return s, nil
	}
	switch spec.typ {
	case typeString, typeText:
		s, err := str()
		if err != nil {
			return nil, err
		}
		limit := MaxString
		if spec.typ == typeText {
			limit = MaxText
		}
		if len(s) > limit {
			return nil, Errorf(ErrTextTooLarge, "field %q is %d bytes; the limit is %d", name, len(s), limit)
		}
		if spec.required && spec.typ == typeString && s == "" {
			return nil, Errorf(ErrMissingField, "field %q cannot be empty", name)
		}
	case typeArea:
		s, err := str()
		if err != nil {
			return nil, err
		}
		if !ValidArea(s) {
			return nil, Errorf(ErrBadID, "field %q: an area is 1 to %d bytes without control characters, commas or '*'", name, MaxAreaLen)
		}
	case typeID:
		s, err := str()
		if err != nil {
			return nil, err
		}
		if !ValidID(s) {
			return nil, Errorf(ErrBadID, "field %q is not a record ID (1 to %d letters, digits, '-' or '_')", name, MaxIDLen)
		}
	case typeEnum:
		s, err := str()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(spec.enum, s) {
			if name == FieldKind {
				return nil, Errorf(ErrUnknownKind, "entry kind must be one of %v", spec.enum)
			}
			return nil, Errorf(ErrBadEnum, "field %q must be one of %v", name, spec.enum)
		}
	case typeDate:
		s, err := str()
		if err != nil {
			return nil, err
		}
		if _, err := time.Parse(time.DateOnly, s); err != nil {
			return nil, Errorf(ErrBadDate, "field %q must be a date (YYYY-MM-DD)", name)
		}
	case typeDateTime:
		s, err := str()
		if err != nil {
			return nil, err
		}
		if _, err := time.Parse(time.RFC3339, s); err != nil {
			if _, err := time.Parse(time.DateOnly, s); err != nil {
				return nil, Errorf(ErrBadDate, "field %q must be an RFC 3339 time or a date (YYYY-MM-DD)", name)
			}
		}
	case typeTags:
		var tags []string
		if err := json.Unmarshal(data, &tags); err != nil {
			return nil, Errorf(ErrBadValue, "field %q must be an array of strings", name)
		}
		if len(tags) > MaxTags {
			return nil, Errorf(ErrBadValue, "field %q has %d tags; the limit is %d", name, len(tags), MaxTags)
		}
		for _, t := range tags {
			if t == "" || len(t) > 64 || !utf8.ValidString(t) {
				return nil, Errorf(ErrBadValue, "field %q: every tag must be 1 to 64 bytes of UTF-8", name)
			}
		}
	case typeBool:
		if string(data) != "true" && string(data) != "false" {
			return nil, Errorf(ErrBadValue, "field %q must be true or false", name)
		}
	case typeAny:
		var s string
		if json.Unmarshal(data, &s) == nil && len(s) > MaxText {
			return nil, Errorf(ErrTextTooLarge, "field %q is %d bytes; the limit is %d", name, len(s), MaxText)
		}
	default:
		panic(fmt.Sprintf("bug: field type %d has no check", spec.typ))
	}
	return data, nil
}

// CheckSize returns ErrRecordTooLarge if r's encoding exceeds MaxRecord or r
// has more than MaxFields fields. The server checks it after joining a
// change, before storing.
func CheckSize(r *Record) error {
	if len(r.Fields) > MaxFields {
		return Errorf(ErrRecordTooLarge, "%s has %d fields; the limit is %d", r.Key(), len(r.Fields), MaxFields)
	}
	b, err := Marshal(r)
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	if len(b) > MaxRecord {
		return Errorf(ErrRecordTooLarge, "%s would be %d bytes; the limit is %d", r.Key(), len(b), MaxRecord)
	}
	return nil
}
