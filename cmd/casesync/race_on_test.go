//go:build unix && race

package main_test

// raceEnabled: the tests run with -race, so the casesync they exec is
// built with -race too, and a data race in the CLI fails the test.
const raceEnabled = true
