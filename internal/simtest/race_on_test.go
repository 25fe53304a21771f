//go:build race

package simtest

// raceEnabled sizes the default run: the race detector makes the
// simulation 5 to 26 times slower.
const raceEnabled = true
