// Package server is casesync's sync server: a Fiber application that speaks
// the syncproto protocol over WebSocket to caseworkers' devices, stores
// changes in an embedded store, enforces who may see and write what, and
// fans accepted changes out to every connected device in scope.
package server
