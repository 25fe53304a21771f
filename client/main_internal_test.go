package client

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine running: the
// store spawns none, and the sync engine must stop all of its own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
