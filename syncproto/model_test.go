package syncproto_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	sp "github.com/casesync/casesync/syncproto"
)

// mCaseIndex is a CaseIndex backed by a map from case ID to area.
type mCaseIndex map[string]string

func (m mCaseIndex) CaseArea(id string) (string, bool) {
	a, ok := m[id]
	return a, ok
}

const (
	mUser   = "anouk"
	mDevice = "dev-anouk-1"
	mCase   = "case-000001"
	mEntry  = "entry-000001"
)

var (
	mActor = sp.Actor{User: mUser, Device: mDevice}
	mCases = mCaseIndex{mCase: "Zuilen"}
)

// w is a write of raw JSON with no context.
func mw(raw string) sp.Write { return sp.Write{Data: json.RawMessage(raw)} }

// jstr returns s as a JSON string.
func mStr(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// newCaseFields are the fields of a minimal valid new case.
func mCaseFields() map[string]sp.Write {
	return map[string]sp.Write{
		sp.FieldTitle:  mw(`"Damp in the bedroom"`),
		sp.FieldArea:   mw(`"Zuilen"`),
		sp.FieldStatus: mw(`"open"`),
	}
}

// newEntryFields are the fields of a minimal valid new entry of kind.
func mEntryFields(kind string) map[string]sp.Write {
	f := map[string]sp.Write{
		sp.FieldCaseID:     mw(mStr(mCase)),
		sp.FieldKind:       mw(mStr(kind)),
		sp.FieldAuthor:     mw(mStr(mUser)),
		sp.FieldOccurredAt: mw(`"2025-01-06T09:30:00+01:00"`),
		sp.FieldText:       mw(`"Visited the tenant."`),
	}
	if kind == sp.KindReferral {
		f[sp.FieldReferredTo] = mw(`"Juridisch Loket"`)
	}
	return f
}

// with returns fields with the given writes added (a nil-data write deletes
// the field).
func mWith(fields map[string]sp.Write, add map[string]sp.Write) map[string]sp.Write {
	for k, v := range add {
		if v.Data == nil && v.Seen == nil && v.Covers == nil {
			delete(fields, k)
			continue
		}
		fields[k] = v
	}
	return fields
}

func mWithout(fields map[string]sp.Write, names ...string) map[string]sp.Write {
	for _, n := range names {
		delete(fields, n)
	}
	return fields
}

// existing returns the record state made by applying a change of the given
// fields, written by device dev, to nothing.
func mExisting(coll sp.Collection, id, dev string, fields map[string]sp.Write) *sp.Record {
	ch := sp.Change{Seq: 1, Collection: coll, ID: id, Stamp: goldenStamp, Fields: fields}
	r := &sp.Record{Collection: coll, ID: id}
	r.Join(ch.State(dev))
	return r
}

func mExistingCase() *sp.Record { return mExisting(sp.Cases, mCase, "dev-other", mCaseFields()) }

// existingEntry is an entry written by user author.
func mExistingEntry(author string) *sp.Record {
	f := mEntryFields(sp.KindVisit)
	f[sp.FieldAuthor] = mw(mStr(author))
	return mExisting(sp.Entries, mEntry, "dev-"+author, f)
}

type mChangeCase struct {
	name      string
	coll      sp.Collection
	id        string
	seq       uint64
	fields    map[string]sp.Write
	cur       *sp.Record
	actor     *sp.Actor         // default mActor
	cases     sp.CaseIndex      // default mCases; set noCases for nil
	noCases   bool              // validate with a nil CaseIndex
	want      *sp.Error         // nil: valid
	wantField string            // the Field of the error
	wantData  map[string]string // expected canonical values after a valid change
}

func (tc mChangeCase) run(t *testing.T) {
	t.Helper()
	ch := &sp.Change{Seq: tc.seq, Collection: tc.coll, ID: tc.id, Stamp: goldenStamp, Fields: tc.fields}
	if ch.Seq == 0 {
		ch.Seq = 7
	}
	if ch.ID == "" {
		ch.ID = mCase
		if tc.coll == sp.Entries {
			ch.ID = mEntry
		}
	}
	actor := mActor
	if tc.actor != nil {
		actor = *tc.actor
	}
	var cases sp.CaseIndex = mCases
	if tc.cases != nil {
		cases = tc.cases
	}
	if tc.noCases {
		cases = nil
	}
	err := sp.ValidateChange(ch, tc.cur, actor, cases)
	if tc.want == nil {
		if err != nil {
			t.Fatalf("ValidateChange(%s) = %v, want nil", tc.name, err)
		}
		for name, want := range tc.wantData {
			if got := string(ch.Fields[name].Data); got != want {
				t.Errorf("after ValidateChange, field %s = %s, want %s", name, got, want)
			}
		}
		return
	}
	if !errors.Is(err, tc.want) {
		t.Fatalf("ValidateChange(%s) = %v, want %v", tc.name, err, tc.want)
	}
	var e *sp.Error
	if !errors.As(err, &e) {
		t.Fatalf("ValidateChange(%s) = %T, want *Error", tc.name, err)
	}
	if e.Field != tc.wantField {
		t.Errorf("ValidateChange(%s).Field = %q, want %q", tc.name, e.Field, tc.wantField)
	}
	if !e.Code.Known() {
		t.Errorf("ValidateChange(%s).Code = %q, not a known code", tc.name, e.Code)
	}
}

func TestValidateChangeErrors(t *testing.T) {
	other := sp.Actor{User: "bram", Device: "dev-bram-1"}
	long := strings.Repeat("x", sp.MaxText+1)
	tests := []mChangeCase{
		// Identity and shape.
		{name: "unknown collection", coll: "notes", fields: mCaseFields(), want: sp.ErrUnknownCollection},
		{name: "empty collection", coll: "", fields: mCaseFields(), want: sp.ErrUnknownCollection},
		{name: "bad record ID", coll: sp.Cases, id: "-case", fields: mCaseFields(), want: sp.ErrBadID},
		{name: "record ID with a space", coll: sp.Cases, id: "case 1", fields: mCaseFields(), want: sp.ErrBadID},
		{name: "record ID too long", coll: sp.Cases, id: strings.Repeat("a", sp.MaxIDLen+1), fields: mCaseFields(), want: sp.ErrBadID},
		{name: "no fields", coll: sp.Cases, fields: map[string]sp.Write{}, want: sp.ErrBadChange},
		{name: "field without value", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTenant: {Seen: sp.Versions{"d": 1}}}), want: sp.ErrBadValue, wantField: sp.FieldTenant},
		{name: "bad device in seen", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTenant: {Data: json.RawMessage(`"x"`), Seen: sp.Versions{"bad device": 1}}}), want: sp.ErrBadID, wantField: sp.FieldTenant},

		// Required fields.
		{name: "case without title", coll: sp.Cases, fields: mWithout(mCaseFields(), sp.FieldTitle), want: sp.ErrMissingField, wantField: sp.FieldTitle},
		{name: "case with empty title", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTitle: mw(`""`)}), want: sp.ErrMissingField, wantField: sp.FieldTitle},
		{name: "case without status", coll: sp.Cases, fields: mWithout(mCaseFields(), sp.FieldStatus), want: sp.ErrMissingField, wantField: sp.FieldStatus},
		{name: "case without area", coll: sp.Cases, fields: mWithout(mCaseFields(), sp.FieldArea), want: sp.ErrMissingField, wantField: sp.FieldArea},
		{name: "entry without text", coll: sp.Entries, fields: mWithout(mEntryFields(sp.KindVisit), sp.FieldText), want: sp.ErrMissingField, wantField: sp.FieldText},
		{name: "entry without case_id", coll: sp.Entries, fields: mWithout(mEntryFields(sp.KindVisit), sp.FieldCaseID), want: sp.ErrMissingField, wantField: sp.FieldCaseID},
		{name: "entry without kind", coll: sp.Entries, fields: mWithout(mEntryFields(sp.KindVisit), sp.FieldKind), want: sp.ErrMissingField, wantField: sp.FieldKind},
		{name: "entry without author", coll: sp.Entries, fields: mWithout(mEntryFields(sp.KindVisit), sp.FieldAuthor), want: sp.ErrMissingField, wantField: sp.FieldAuthor},
		{name: "entry without occurred_at", coll: sp.Entries, fields: mWithout(mEntryFields(sp.KindVisit), sp.FieldOccurredAt), want: sp.ErrMissingField, wantField: sp.FieldOccurredAt},
		{name: "entry with empty author", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldAuthor: mw(`""`)}), want: sp.ErrMissingField, wantField: sp.FieldAuthor},
		{name: "referral without referred_to", coll: sp.Entries, fields: mWithout(mEntryFields(sp.KindReferral), sp.FieldReferredTo), want: sp.ErrMissingField, wantField: sp.FieldReferredTo},
		{name: "referral with null referred_to", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindReferral), map[string]sp.Write{sp.FieldReferredTo: mw(`null`)}), want: sp.ErrMissingField, wantField: sp.FieldReferredTo},
		{name: "referral with empty referred_to", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindReferral), map[string]sp.Write{sp.FieldReferredTo: mw(`""`)}), want: sp.ErrMissingField, wantField: sp.FieldReferredTo},
		{name: "clearing referred_to of an existing referral", coll: sp.Entries,
			cur:    mExisting(sp.Entries, mEntry, "dev-x", mEntryFields(sp.KindReferral)),
			fields: map[string]sp.Write{sp.FieldReferredTo: mw(`null`)}, want: sp.ErrMissingField, wantField: sp.FieldReferredTo},

		// Enumerations.
		{name: "unknown kind", coll: sp.Entries, fields: mEntryFields("dance"), want: sp.ErrUnknownKind, wantField: sp.FieldKind},
		{name: "kind in capitals", coll: sp.Entries, fields: mEntryFields("Visit"), want: sp.ErrUnknownKind, wantField: sp.FieldKind},
		{name: "bad status", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldStatus: mw(`"pending"`)}), want: sp.ErrBadEnum, wantField: sp.FieldStatus},
		{name: "status on update", coll: sp.Cases, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldStatus: mw(`"deleted"`)}, want: sp.ErrBadEnum, wantField: sp.FieldStatus},

		// Dates.
		{name: "next_action not a date", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldNextAction: mw(`"tomorrow"`)}), want: sp.ErrBadDate, wantField: sp.FieldNextAction},
		{name: "next_action month 13", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldNextAction: mw(`"2025-13-01"`)}), want: sp.ErrBadDate, wantField: sp.FieldNextAction},
		{name: "next_action with time", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldNextAction: mw(`"2025-01-13T10:00:00Z"`)}), want: sp.ErrBadDate, wantField: sp.FieldNextAction},
		{name: "follow_up 30 February", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldFollowUp: mw(`"2025-02-30"`)}), want: sp.ErrBadDate, wantField: sp.FieldFollowUp},
		{name: "follow_up one-digit month", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldFollowUp: mw(`"2025-1-30"`)}), want: sp.ErrBadDate, wantField: sp.FieldFollowUp},
		{name: "occurred_at not a time", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldOccurredAt: mw(`"yesterday"`)}), want: sp.ErrBadDate, wantField: sp.FieldOccurredAt},
		{name: "occurred_at hour 25", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldOccurredAt: mw(`"2025-01-06T25:00:00Z"`)}), want: sp.ErrBadDate, wantField: sp.FieldOccurredAt},
		{name: "occurred_at with lower-case t", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldOccurredAt: mw(`"2025-01-06t09:30:00Z"`)}), want: sp.ErrBadDate, wantField: sp.FieldOccurredAt},
		{name: "occurred_at without zone", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldOccurredAt: mw(`"2025-01-06T09:30:00"`)}), want: sp.ErrBadDate, wantField: sp.FieldOccurredAt},

		// JSON types.
		{name: "title a number", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTitle: mw(`42`)}), want: sp.ErrBadValue, wantField: sp.FieldTitle},
		{name: "status null", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldStatus: mw(`null`)}), want: sp.ErrBadValue, wantField: sp.FieldStatus},
		{name: "area an object", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldArea: mw(`{"name":"Zuilen"}`)}), want: sp.ErrBadValue, wantField: sp.FieldArea},
		{name: "tags a string", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTags: mw(`"mould"`)}), want: sp.ErrBadValue, wantField: sp.FieldTags},
		{name: "tags with a number", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTags: mw(`["a",1]`)}), want: sp.ErrBadValue, wantField: sp.FieldTags},
		{name: "empty tag", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTags: mw(`["a",""]`)}), want: sp.ErrBadValue, wantField: sp.FieldTags},
		{name: "tag over 64 bytes", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTags: mw(`["` + strings.Repeat("t", 65) + `"]`)}), want: sp.ErrBadValue, wantField: sp.FieldTags},
		{name: "33 tags", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTags: mw(`[` + strings.TrimSuffix(strings.Repeat(`"t",`, sp.MaxTags+1), ",") + `]`)}), want: sp.ErrBadValue, wantField: sp.FieldTags},
		{name: "next_action a number", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldNextAction: mw(`20250113`)}), want: sp.ErrBadValue, wantField: sp.FieldNextAction},
		{name: "kind a number", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldKind: mw(`1`)}), want: sp.ErrBadValue, wantField: sp.FieldKind},
		{name: "case_id a number", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldCaseID: mw(`1`)}), want: sp.ErrBadValue, wantField: sp.FieldCaseID},
		{name: "text null", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldText: mw(`null`)}), want: sp.ErrBadValue, wantField: sp.FieldText},
		{name: "_deleted a string", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldDeleted: mw(`"yes"`)}, want: sp.ErrBadValue, wantField: sp.FieldDeleted},
		{name: "_deleted null", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldDeleted: mw(`null`)}, want: sp.ErrBadValue, wantField: sp.FieldDeleted},
		{name: "value not JSON", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTenant: mw(`{bad`)}), want: sp.ErrBadValue, wantField: sp.FieldTenant},

		// Field names.
		{name: "field name with capitals and dash", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{"Bad-Name": mw(`1`)}), want: sp.ErrBadField, wantField: "Bad-Name"},
		{name: "field name starting with a digit", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{"1st": mw(`1`)}), want: sp.ErrBadField, wantField: "1st"},
		{name: "field name starting with underscore", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindNote), map[string]sp.Write{"_private": mw(`1`)}), want: sp.ErrBadField, wantField: "_private"},
		{name: "field name with a dot", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{"a.b": mw(`1`)}), want: sp.ErrBadField, wantField: "a.b"},
		{name: "field name too long", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{strings.Repeat("a", 64): mw(`1`)}), want: sp.ErrBadField},

		// Identifiers inside values.
		{name: "case_id not an ID", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{sp.FieldCaseID: mw(`"case 1"`)}), want: sp.ErrBadID, wantField: sp.FieldCaseID},
		{name: "area with a comma", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldArea: mw(`"Zuilen,Lombok"`)}), want: sp.ErrBadID, wantField: sp.FieldArea},
		{name: "area with a star", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldArea: mw(`"*"`)}), want: sp.ErrBadID, wantField: sp.FieldArea},
		{name: "area empty", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldArea: mw(`""`)}), want: sp.ErrBadID, wantField: sp.FieldArea},

		// Sizes.
		{name: "text over 64 KiB", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindNote), map[string]sp.Write{sp.FieldText: mw(mStr(long))}), want: sp.ErrTextTooLarge, wantField: sp.FieldText},
		{name: "summary over 64 KiB", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldSummary: mw(mStr(long))}), want: sp.ErrTextTooLarge, wantField: sp.FieldSummary},
		{name: "extra string over 64 KiB", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{"notes": mw(mStr(long))}), want: sp.ErrTextTooLarge, wantField: "notes"},
		{name: "title over 1 KiB", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTitle: mw(mStr(strings.Repeat("t", sp.MaxString+1)))}), want: sp.ErrTextTooLarge, wantField: sp.FieldTitle},
		{name: "escaped text over 64 KiB once decoded", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindNote), map[string]sp.Write{sp.FieldText: mw(`"` + strings.Repeat(`\u00e9`, sp.MaxText/2+1) + `"`)}), want: sp.ErrTextTooLarge, wantField: sp.FieldText},

		// Cross-record rules.
		{name: "entry for an unknown case", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldCaseID: mw(`"case-404"`)}), want: sp.ErrUnknownCase, wantField: sp.FieldCaseID},
		{name: "entry with an empty case index", coll: sp.Entries, cases: mCaseIndex{}, fields: mEntryFields(sp.KindVisit), want: sp.ErrUnknownCase, wantField: sp.FieldCaseID},
		{name: "edit of an entry whose case is gone", coll: sp.Entries, cases: mCaseIndex{}, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldText: mw(`"more"`)}, want: sp.ErrUnknownCase, wantField: sp.FieldCaseID},
		{name: "immutable case_id", coll: sp.Entries, cur: mExistingEntry(mUser), cases: mCaseIndex{mCase: "Zuilen", "case-000002": "Zuilen"}, fields: map[string]sp.Write{sp.FieldCaseID: mw(`"case-000002"`)}, want: sp.ErrImmutable, wantField: sp.FieldCaseID},
		{name: "immutable kind", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldKind: mw(`"call"`)}, want: sp.ErrImmutable, wantField: sp.FieldKind},
		{name: "immutable author", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldAuthor: mw(`"bram"`)}, want: sp.ErrImmutable, wantField: sp.FieldAuthor},
		{name: "another user takes over an entry", coll: sp.Entries, actor: &other, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldAuthor: mw(`"bram"`)}, want: sp.ErrImmutable, wantField: sp.FieldAuthor},
		{name: "not the author edits", coll: sp.Entries, actor: &other, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldText: mw(`"rewritten"`)}, want: sp.ErrNotAuthor, wantField: sp.FieldAuthor},
		{name: "not the author deletes", coll: sp.Entries, actor: &other, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldDeleted: {Data: json.RawMessage(`true`), Covers: sp.Versions{"dev-anouk": 1}}}, want: sp.ErrNotAuthor, wantField: sp.FieldAuthor},
		{name: "new entry in another's name", coll: sp.Entries, actor: &other, fields: mEntryFields(sp.KindVisit), want: sp.ErrNotAuthor, wantField: sp.FieldAuthor},
		{name: "deleting a case", coll: sp.Cases, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldDeleted: {Data: json.RawMessage(`true`), Covers: sp.Versions{"dev-other": 1}}}, want: sp.ErrNotDeletable, wantField: sp.FieldDeleted},
		{name: "deleting a case without covers", coll: sp.Cases, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldDeleted: mw(`true`)}, want: sp.ErrNotDeletable, wantField: sp.FieldDeleted},
		{name: "creating a case deleted", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldDeleted: mw(`true`)}), want: sp.ErrNotDeletable, wantField: sp.FieldDeleted},
		{name: "creating an entry deleted", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldDeleted: mw(`true`)}), want: sp.ErrBadChange, wantField: sp.FieldDeleted},

		// Causal context.
		{name: "seen covers own seq", coll: sp.Cases, seq: 7, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"closed"`), Seen: sp.Versions{mDevice: 7}}}, want: sp.ErrBadChange, wantField: sp.FieldStatus},
		{name: "seen covers a later seq", coll: sp.Cases, seq: 7, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"closed"`), Seen: sp.Versions{mDevice: 9}}}, want: sp.ErrBadChange, wantField: sp.FieldStatus},
		{name: "covers on a non-_deleted field", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldText: {Data: json.RawMessage(`"x"`), Covers: sp.Versions{"dev-anouk": 1}}}, want: sp.ErrBadChange, wantField: sp.FieldText},
		{name: "covers on a case field", coll: sp.Cases, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"closed"`), Covers: sp.Versions{"dev-other": 1}}}, want: sp.ErrBadChange, wantField: sp.FieldStatus},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
	// Seq 0 needs its own case: run() defaults a zero seq.
	t.Run("seq 0", func(t *testing.T) {
		ch := &sp.Change{Seq: 0, Collection: sp.Cases, ID: mCase, Stamp: goldenStamp, Fields: mCaseFields()}
		err := sp.ValidateChange(ch, nil, mActor, mCases)
		if !errors.Is(err, sp.ErrBadChange) {
			t.Errorf("ValidateChange(seq 0) = %v, want %v", err, sp.ErrBadChange)
		}
	})
	t.Run("stamp 0", func(t *testing.T) {
		ch := &sp.Change{Seq: 1, Collection: sp.Cases, ID: mCase, Fields: mCaseFields()}
		err := sp.ValidateChange(ch, nil, mActor, mCases)
		if !errors.Is(err, sp.ErrBadChange) {
			t.Errorf("ValidateChange(stamp 0) = %v, want %v", err, sp.ErrBadChange)
		}
	})
	t.Run("65 fields", func(t *testing.T) {
		f := mCaseFields()
		for i := len(f); i <= sp.MaxFields; i++ {
			f[fmt.Sprintf("x%d", i)] = mw(`1`)
		}
		ch := &sp.Change{Seq: 1, Collection: sp.Cases, ID: mCase, Stamp: goldenStamp, Fields: f}
		err := sp.ValidateChange(ch, nil, mActor, mCases)
		if !errors.Is(err, sp.ErrBadChange) {
			t.Errorf("ValidateChange(%d fields) = %v, want %v", len(f), err, sp.ErrBadChange)
		}
	})
}

func TestValidateChangeOK(t *testing.T) {
	tests := []mChangeCase{
		{name: "minimal case", coll: sp.Cases, fields: mCaseFields()},
		{name: "full case", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{
			sp.FieldTenant: mw(`"Mevr. Bakker"`), sp.FieldAddress: mw(`"Amsterdamsestraatweg 1"`), sp.FieldOwner: mw(`"anouk"`),
			sp.FieldTags: mw(`["mould","landlord"]`), sp.FieldSummary: mw(`"Long story."`), sp.FieldNextAction: mw(`"2025-01-13"`),
		})},
		{name: "case status waiting", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldStatus: mw(`"waiting"`)})},
		{name: "case status closed", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldStatus: mw(`"closed"`)})},
		{name: "extra fields of any JSON type", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{
			"priority": mw(`3`), "flags": mw(`[true,false]`), "contact": mw(`{"phone":"030-1234567"}`), "x_2": mw(`"s"`),
			strings.Repeat("a", 63): mw(`1`),
		})},
		{name: "extra field on an entry", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindNote), map[string]sp.Write{"duration_min": mw(`45`)})},
		{name: "null on nullable case fields", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{
			sp.FieldTenant: mw(`null`), sp.FieldAddress: mw(`null`), sp.FieldOwner: mw(`null`), sp.FieldTags: mw(`null`),
			sp.FieldSummary: mw(`null`), sp.FieldNextAction: mw(`null`), "extra": mw(`null`),
		})},
		{name: "null on nullable entry fields", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindCall), map[string]sp.Write{
			sp.FieldReferredTo: mw(`null`), sp.FieldFollowUp: mw(`null`),
		})},
		{name: "occurred_at as a date", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldOccurredAt: mw(`"2025-01-06"`)})},
		{name: "occurred_at in UTC with fraction", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldOccurredAt: mw(`"2025-01-06T08:30:00.123Z"`)})},
		{name: "follow_up date", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldFollowUp: mw(`"2024-02-29"`)})},
		{name: "empty text", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindNote), map[string]sp.Write{sp.FieldText: mw(`""`)})},
		{name: "_deleted false on a new entry", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldDeleted: mw(`false`)})},
		{name: "text of exactly 64 KiB", coll: sp.Entries, fields: mWith(mEntryFields(sp.KindNote), map[string]sp.Write{sp.FieldText: mw(mStr(strings.Repeat("x", sp.MaxText)))})},
		{name: "title of exactly 1 KiB", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTitle: mw(mStr(strings.Repeat("x", sp.MaxString)))})},
		{name: "32 tags", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldTags: mw(`[` + strings.TrimSuffix(strings.Repeat(`"t",`, sp.MaxTags), ",") + `]`)})},
		{name: "area with spaces inside and non-ASCII", coll: sp.Cases, fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldArea: mw(`"Lombok Oost – Kanaalstraat"`)})},
		{name: "imported IDs", coll: sp.Entries, id: "entry_import-2019-0001", fields: mEntryFields(sp.KindLetter)},
		{name: "entry without a case index", coll: sp.Entries, noCases: true, fields: mWith(mEntryFields(sp.KindVisit), map[string]sp.Write{sp.FieldCaseID: mw(`"case-404"`)})},
		{name: "referral with referred_to", coll: sp.Entries, fields: mEntryFields(sp.KindReferral)},
		{name: "update of a case without required fields", coll: sp.Cases, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"closed"`), Seen: sp.Versions{"dev-other": 1, mDevice: 6}}}},
		{name: "moving a case", coll: sp.Cases, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldArea: mw(`"Overvecht"`)}},
		{name: "author edits own entry", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldText: {Data: json.RawMessage(`"corrected"`), Seen: sp.Versions{"dev-anouk": 1}}}},
		{name: "author deletes own entry", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldDeleted: {Data: json.RawMessage(`true`), Seen: sp.Versions{}, Covers: sp.Versions{"dev-anouk": 1}}}},
		{name: "author restores own entry", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{sp.FieldDeleted: mw(`false`)}},
		{name: "immutable fields rewritten unchanged", coll: sp.Entries, cur: mExistingEntry(mUser), fields: map[string]sp.Write{
			sp.FieldCaseID: mw(mStr(mCase)), sp.FieldKind: mw(` "visit" `), sp.FieldAuthor: mw(mStr(mUser)),
		}},
		{name: "seen of other devices beyond seq", coll: sp.Cases, seq: 3, cur: mExistingCase(), fields: map[string]sp.Write{sp.FieldStatus: {Data: json.RawMessage(`"closed"`), Seen: sp.Versions{"dev-other": 99, mDevice: 2}}}},
		{name: "empty current record counts as new", coll: sp.Cases, cur: &sp.Record{Collection: sp.Cases, ID: mCase}, fields: mCaseFields()},

		// Canonicalisation.
		{name: "object keys sorted, no HTML escaping", coll: sp.Cases,
			fields:   mWith(mCaseFields(), map[string]sp.Write{"meta": mw(`{"b":1, "a":"<x>"}`)}),
			wantData: map[string]string{"meta": `{"a":"<x>","b":1}`}},
		{name: "whitespace and escapes", coll: sp.Cases,
			fields: mWith(mCaseFields(), map[string]sp.Write{
				sp.FieldTitle: mw(" \"\\u003cb\\u003e \\u0026 \\u00e9\"\n"),
				sp.FieldTags:  mw(`[ "a" , "b" ]`),
				"nested":      mw(`{"z":{"y":[1, 2.50, -0, 1e3],"x":null}, "a":[{"d":4,"c":3}], "a":"last wins"}`),
				"controls":    mw(`"\b\f\u0001\u001F\u007f\u2028\/\ud800"`),
			}),
			wantData: map[string]string{
				sp.FieldTitle: `"<b> & é"`,
				sp.FieldTags:  `["a","b"]`,
				"nested":      `{"a":"last wins","z":{"x":null,"y":[1,2.50,-0,1e3]}}`,
				"controls":    "\"\\b\\f\\u0001\\u001f\x7f\\u2028/\uFFFD\"",
			}},
	}
	for _, kind := range sp.Kinds {
		tests = append(tests, mChangeCase{name: "entry of kind " + kind, coll: sp.Entries, fields: mEntryFields(kind)})
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

// TestValidateChangeCanonicalAlways: every value of a valid change is in
// canonical form afterwards.
func TestValidateChangeCanonicalAlways(t *testing.T) {
	f := mWith(mCaseFields(), map[string]sp.Write{"m": mw(`{ "b" : [ 1 , { "d":1,"c":2 } ] , "a" : "\u0026" }`), sp.FieldTenant: mw(`  "x"  `)})
	ch := &sp.Change{Seq: 1, Collection: sp.Cases, ID: mCase, Stamp: goldenStamp, Fields: f}
	if err := sp.ValidateChange(ch, nil, mActor, mCases); err != nil {
		t.Fatal(err)
	}
	for name, wr := range ch.Fields {
		c, err := sp.Canonical(wr.Data)
		if err != nil || string(c) != string(wr.Data) {
			t.Errorf("field %s = %s after ValidateChange, Canonical = %s, %v; want it unchanged", name, wr.Data, c, err)
		}
	}
}

// TestValidateChangeLeavesSentinelsAlone: errors carry their Field on a
// copy, never on the shared sentinel.
func TestValidateChangeLeavesSentinelsAlone(t *testing.T) {
	ch := &sp.Change{Seq: 1, Collection: sp.Cases, ID: mCase, Stamp: goldenStamp,
		Fields: mWith(mCaseFields(), map[string]sp.Write{sp.FieldNextAction: mw(`"soon"`)})}
	err := sp.ValidateChange(ch, nil, mActor, mCases)
	if !errors.Is(err, sp.ErrBadDate) {
		t.Fatalf("ValidateChange = %v, want %v", err, sp.ErrBadDate)
	}
	if err == error(sp.ErrBadDate) || sp.ErrBadDate.Field != "" || sp.ErrBadDate.Change != 0 {
		t.Errorf("ValidateChange modified or returned the sentinel: %#v", sp.ErrBadDate)
	}
}

func TestCheckSize(t *testing.T) {
	text := func(i int) sp.Field {
		return sp.Field{
			Values: []sp.Value{{Device: "d1", Seq: uint64(i + 1), Stamp: goldenStamp, Data: json.RawMessage(mStr(strings.Repeat("x", 60<<10)))}},
			Seen:   sp.Versions{"d1": uint64(i + 1)},
		}
	}
	small := mExistingCase()
	if err := sp.CheckSize(small); err != nil {
		t.Errorf("CheckSize(small case) = %v, want nil", err)
	}

	big := mExistingCase()
	for i := range 3 {
		big.Fields[fmt.Sprintf("notes_%d", i)] = text(i)
	}
	if n := len(marshalT(t, big)); n > sp.MaxRecord {
		t.Fatalf("3 × 60 KiB record is %d bytes; the test expects it under the limit", n)
	}
	if err := sp.CheckSize(big); err != nil {
		t.Errorf("CheckSize(~180 KiB record) = %v, want nil", err)
	}
	big.Fields["notes_3"] = text(3)
	big.Fields["notes_4"] = text(4)
	if n := len(marshalT(t, big)); n <= sp.MaxRecord {
		t.Fatalf("5 × 60 KiB record is %d bytes; the test expects it over the limit", n)
	}
	wantProtoErr(t, "CheckSize(~300 KiB record)", sp.CheckSize(big), sp.ErrRecordTooLarge)

	// Each field is valid alone; together they outgrow the record.
	wide := mExistingCase()
	for i := len(wide.Fields); i <= sp.MaxFields; i++ {
		wide.Fields[fmt.Sprintf("x%d", i)] = sp.Field{Values: []sp.Value{{Device: "d1", Seq: 1, Stamp: 1, Data: json.RawMessage(`1`)}}, Seen: sp.Versions{"d1": 1}}
	}
	wantProtoErr(t, fmt.Sprintf("CheckSize(%d fields)", len(wide.Fields)), sp.CheckSize(wide), sp.ErrRecordTooLarge)
	delete(wide.Fields, "x3")
	if err := sp.CheckSize(wide); err != nil {
		t.Errorf("CheckSize(%d fields) = %v, want nil", len(wide.Fields), err)
	}
}

func TestCollectionKnown(t *testing.T) {
	for _, c := range []sp.Collection{sp.Cases, sp.Entries} {
		if !c.Known() {
			t.Errorf("Collection(%q).Known() = false, want true", c)
		}
	}
	for _, c := range []sp.Collection{"", "notes", "Cases", "case"} {
		if c.Known() {
			t.Errorf("Collection(%q).Known() = true, want false", c)
		}
	}
}
