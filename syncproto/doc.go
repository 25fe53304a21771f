// Package syncproto defines what casesync's server and clients share: the
// case-record model and its validation rules, the hybrid logical clock, the
// per-field merge rules, and the wire protocol (messages and frames).
//
// PROTOCOL.md beside this file is the specification; this package is its
// reference implementation. The two are kept in step: every message, field
// and error code named there is defined here, and no others.
//
// The package imports only the standard library and
// github.com/klauspost/compress, so that the server, the client and any
// tool can depend on it without pulling in either side.
package syncproto
