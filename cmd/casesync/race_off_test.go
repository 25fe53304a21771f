//go:build unix && !race

package main_test

const raceEnabled = false
