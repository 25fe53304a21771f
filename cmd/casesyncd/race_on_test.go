//go:build unix && race

package main_test

// raceEnabled: the tests run with -race, so the casesyncd they exec is
// built with -race too, and a data race in the server fails the test.
const raceEnabled = true
