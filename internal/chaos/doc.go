// Package chaos holds casesync's real-process chaos test: one casesyncd and
// several casesync devices, each a real process built from cmd/, talk over
// loopback TCP through in-process toxiproxy links, while a seeded schedule
// switches faults on and off, SIGKILLs clients and the server, changes
// users' areas, moves cases, makes devices edit the same field at once,
// and once revokes a device that is still writing (revoke_test.go).
// At the end everything is healed and synced until quiescent, and the
// simulation's invariants (internal/simtest/oracle.go) are checked against
// the server's store and every device's replica.
//
// Why real processes, when internal/simtest already simulates all of this
// deterministically: the simulation drives the client and server libraries
// through an in-memory network with an injected clock. Only real processes
// exercise what it cannot: the CLI sharing a replica file with a running
// 'casesync run', fsync and bbolt's file lock across a SIGKILL, the
// operating system's TCP (resets, half-open connections, slow links), real
// timers and reconnect backoff, and the admin CLI against a live server.
//
// The test is in chaos_test.go; run it alone with
//
//	go test -race -count=1 ./internal/chaos/ -v -chaos.seed=N
//
// A failure prints the seed that reproduces its schedule (the timing of
// the processes, and so the exact interleaving, differs between runs).
package chaos
