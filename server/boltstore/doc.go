// Package boltstore implements server.Store on one bbolt file, so that
// casesyncd needs no database server: the file is the data directory.
//
// # Writes
//
// Every write goes through one writer goroutine that the Store owns. It
// takes the first waiting Update and every other one already queued (up to
// Options.MaxBatch updates and Options.MaxWeight of work, as UpdateWeight
// declares it), runs all of them in one read-write transaction and
// commits once, with fsync, before answering any caller. On this machine an
// fsync costs ~0.1 ms, on laptops and macOS far more; sharing it is what
// makes many small concurrent pushes cheap. bbolt's own db.Batch does the
// same but waits 10 ms for company before each commit (~660 commits/s with
// 8 callers), so it is not used. If one function of a batch fails, the
// batch is rolled back, the failing function is run again alone so that its
// error is definitive, and the others are run again: as with db.Batch, an
// update function may run more than once.
//
// # Layout
//
// Keys are bytes; sequences are big-endian uint64 so that cursors iterate in
// order. A record key is its collection, "/", and its ID ("cases/c-1").
//
//	meta                  format → "2", server_id, epoch → 16 hex chars,
//	                      head → the highest sequence assigned (NextSeq)
//	log                   seq → LogEntry (JSON); append-only, FillPercent 1
//	records               key → seq (8) | uvarint len | area | uvarint len |
//	                      case ID | state: Record (JSON), or, for a record
//	                      one write made, its compact form (compact.go)
//	areas/<area>/idx      seq → 0x00 key            the record, filed here
//	                      seq → 0x01 uvarint len key | destination area
//	                                                an eviction marker
//	                      append-mostly, FillPercent 1
//	areas/<area>/keys     key → seq of the key's entry in idx, so re-filing
//	                      a record finds and deletes its old entry in O(log n)
//	case_entries          uvarint len | case ID | entry ID → empty
//	accepted              uvarint len | device | seq → digest
//	conflicts             key → area
//	users                 name → User (JSON)
//	devices               id → Device (JSON)
//	tokens                token hash → device ID
//
// Each area has its own nested bucket, so scanning an area reads only that
// area's pages: a caseworker's pull costs O(her scope), not O(server).
// The record's area and case ID are kept in front of its JSON so that
// PutRecord can re-file a record, and RecordArea tell a case's area,
// without decoding its state; ScanRaw hands out the JSON as it is.
//
// JSON is encoded with syncproto.Marshal, which does not escape HTML, so
// field values stay byte-identical to what devices sent.
package boltstore
