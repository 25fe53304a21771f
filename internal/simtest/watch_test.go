package simtest

import (
	"context"
	"flag"
	"fmt"
	"strings"
)

var flagWatch = flag.Int("simtest.watch", -1, "debug: after every step, log how each device holds the case created N-th (0-based) and its entries")

func init() {
	watchHook = func(s *Sim) {
		n := *flagWatch
		if n < 0 || n >= len(s.m.cases) {
			return
		}
		id := s.m.cases[n]
		var b strings.Builder
		for _, d := range s.devs {
			if d.c == nil {
				continue
			}
			st, _ := d.c.Status(context.Background())
			fmt.Fprintf(&b, " | %s%v cp=%d%v:", d.name, st.Areas, st.Checkpoint.Seq, st.Checkpoint.Areas)
			if v, err := d.c.Get(context.Background(), caseKey(id)); err == nil {
				fmt.Fprintf(&b, " case@%s", v.Area)
			} else {
				b.WriteString(" nocase")
			}
			for _, e := range s.m.entries {
				if e.caseID != id {
					continue
				}
				if v, err := d.c.Get(context.Background(), entryKey(e.id)); err == nil {
					fmt.Fprintf(&b, " %s@%s", e.id[len(e.id)-3:], v.Area)
				}
			}
		}
		if s.store != nil {
			st := s.readServer()
			if r := st.Records[caseKey(id)]; r != nil {
				fmt.Fprintf(&b, " | server case@%s", r.Area)
			}
		}
		s.logf("watch%s", b.String())
	}
}
