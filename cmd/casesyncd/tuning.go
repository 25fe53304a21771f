package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
)

// tuning is the server's limits, for operators who need other values than
// the defaults: a bigger team, slower laptops, a faster disk. Zero leaves
// the default documented on the server.Config or boltstore.Options field.
type tuning struct {
	rate, burst, maxBatch, maxPayload, decoders, commitChanges int
}

// tuningFlag is one tuning flag and the environment variable that sets it
// when the flag is not given.
type tuningFlag struct {
	name, env, usage string
	def              string // the default, as --help shows it; the flag's own value is 0
	v                *int
}

func (t *tuning) flags() []tuningFlag {
	return []tuningFlag{
		{"rate", "CASESYNC_RATE", "changes per second one device may push, sustained", "2000", &t.rate},
		{"burst", "CASESYNC_BURST", "changes one device may push at once", "10000", &t.burst},
		{"max-batch", "CASESYNC_MAX_BATCH", "most changes in one push", "1000", &t.maxBatch},
		{"max-payload", "CASESYNC_MAX_PAYLOAD", "largest decoded frame payload in bytes", "4194304", &t.maxPayload},
		{"decoders", "CASESYNC_DECODERS", "sessions decoding or preparing a push at once", "GOMAXPROCS-1, at least 1", &t.decoders},
		{"commit-changes", "CASESYNC_COMMIT_CHANGES", "most pushed changes in one group commit", "4096", &t.commitChanges},
	}
}

// register adds the flags to fs.
func (t *tuning) register(fs *flag.FlagSet) {
	for _, f := range t.flags() {
		fs.IntVar(f.v, f.name, 0, f.usage+" (default "+f.def+"; env "+f.env+")")
	}
}

// fromEnv fills, from the environment, the values whose flags fs did not
// set, and checks every value.
func (t *tuning) fromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range t.flags() {
		if v, ok := os.LookupEnv(f.env); ok && v != "" && !set[f.name] {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want a whole number", f.env, v)
			}
			*f.v = n
		}
		if *f.v < 0 {
			return fmt.Errorf("--%s %d: must not be negative (0 or unset takes the default)", f.name, *f.v)
		}
	}
	return nil
}

// apply copies the values into the server's and the store's configuration.
func (t *tuning) apply(cfg *server.Config, opts *boltstore.Options) {
	cfg.Rate, cfg.Burst, cfg.MaxBatch, cfg.MaxPayload, cfg.Decoders = t.rate, t.burst, t.maxBatch, t.maxPayload, t.decoders
	opts.MaxWeight = t.commitChanges
}
