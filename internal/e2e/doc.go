// Package e2e holds end-to-end tests of the client library against a real
// server over real sockets: the field scenarios of a caseworker's day.
package e2e
