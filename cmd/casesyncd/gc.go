package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// The garbage collector's settings. A sync server allocates a great deal of
// short-lived memory per change (frames, JSON, merged records) while its
// live heap is small, so the default GOGC=100 makes it collect far more
// often than it needs to: measured with cmd/casesync-load, 200 pushing
// devices went from 11,168 accepted changes/s (GOGC=100) to 12,018 with
// these defaults, and 13,651 with no memory limit (BENCHMARKS.md). The soft memory limit keeps the larger GOGC from
// costing memory where it matters, 10,000 idle connections (347 MiB RSS
// with it): the collector works harder as the heap nears it. At 384 MiB
// it bound during a push burst and cost a fifth of the throughput. GOGC and GOMEMLIMIT in the environment
// win over both defaults, as they do for any Go program.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = "768MiB"
)

func gcPercentDefault() int {
	if os.Getenv("GOGC") != "" {
		return -2 // leave the runtime's, set from GOGC
	}
	return defaultGCPercent
}

func memoryLimitDefault() string {
	if os.Getenv("GOMEMLIMIT") != "" {
		return "" // leave the runtime's, set from GOMEMLIMIT
	}
	return defaultMemoryLimit
}

// applyGC sets the collector's target percentage (-1 turns it off, -2
// leaves it) and soft memory limit ("" leaves it, "off" removes it).
func applyGC(percent int, limit string) error {
	switch {
	case percent == -2:
	case percent < -1:
		return fmt.Errorf("--gc-percent %d: use a percentage, -1 for off", percent)
	default:
		debug.SetGCPercent(percent)
	}
	if limit == "" {
		return nil
	}
	n, err := parseBytes(limit)
	if err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	debug.SetMemoryLimit(n)
	return nil
}

// parseBytes reads "384MiB", "1GiB", "500000000" or "off".
func parseBytes(s string) (int64, error) {
	if s == "off" {
		return 1<<63 - 1, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size: use bytes or KiB, MiB, GiB (e.g. 384MiB), or off", s)
	}
	return n * mult, nil
}
