package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/casesync/casesync/server"
	"github.com/casesync/casesync/server/boltstore"
)

func TestTuning(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		want    tuning
		wantErr string
	}{
		{name: "defaults", want: tuning{}},
		{name: "flags", args: []string{"--rate", "50", "--max-batch", "20", "--decoders", "3", "--commit-changes", "512"},
			want: tuning{rate: 50, maxBatch: 20, decoders: 3, commitChanges: 512}},
		{name: "env", env: map[string]string{"CASESYNC_BURST": "300", "CASESYNC_MAX_PAYLOAD": "65536"},
			want: tuning{burst: 300, maxPayload: 65536}},
		{name: "flag wins over env", args: []string{"--rate", "7"}, env: map[string]string{"CASESYNC_RATE": "9"},
			want: tuning{rate: 7}},
		{name: "bad env", env: map[string]string{"CASESYNC_DECODERS": "two"}, wantErr: `CASESYNC_DECODERS="two"`},
		{name: "negative", args: []string{"--burst", "-1"}, wantErr: "--burst -1: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range (&tuning{}).flags() {
				t.Setenv(f.env, tt.env[f.env])
			}
			var got tuning
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			got.register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := got.fromEnv(fs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("fromEnv = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("fromEnv = %+v, %v; want %+v", got, err, tt.want)
			}
			var cfg server.Config
			var opts boltstore.Options
			got.apply(&cfg, &opts)
			if cfg.Rate != got.rate || cfg.Burst != got.burst || cfg.MaxBatch != got.maxBatch ||
				cfg.MaxPayload != got.maxPayload || cfg.Decoders != got.decoders || opts.MaxWeight != got.commitChanges {
				t.Fatalf("apply: config %+v, options %+v from %+v", cfg, opts, got)
			}
		})
	}
}
