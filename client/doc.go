// Package client is casesync's offline-first client library: a replica of
// the caseworker's records in a local bbolt file, an outbox of changes made
// offline, and the sync engine that reconciles both with the server.
package client
