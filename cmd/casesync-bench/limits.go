package main

// The machine's own limits for the same work, measured on the same bytes
// (the dataset's JSON lines), so each figure can be read against what
// this disk, CPU and loopback could do at best: a bbolt bulk load, zstd
// and JSON speed, loopback bandwidth and round trip.

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"go.etcd.io/bbolt"

	"github.com/casesync/casesync/internal/caseload"
)

// limits are the machine's figures.
type limits struct {
	BoltLoadMS  float64 `json:"bolt_load_ms"`  // every record, 1,000 per fsync'd transaction
	FsyncP50MS  float64 `json:"fsync_p50_ms"`  // one small fsync'd bbolt transaction
	FsyncP99MS  float64 `json:"fsync_p99_ms"`  //
	ZstdEncMS   float64 `json:"zstd_enc_ms"`   // the JSON in 500-record frames, the codec's settings
	ZstdDecMS   float64 `json:"zstd_dec_ms"`   //
	ZstdBytes   int64   `json:"zstd_bytes"`    // their compressed size
	JSONDecMS   float64 `json:"json_dec_ms"`   // decoding every line into a typed struct
	LoopMBps    float64 `json:"loopback_mbps"` // a TCP copy on 127.0.0.1, MB/s
	RTTMS       float64 `json:"rtt_ms"`        // a 1-byte TCP ping-pong, median
	ConnectMS   float64 `json:"connect_ms"`    // a loopback TCP connect, median
	Records     int     `json:"records"`
	JSONBytes   int64   `json:"json_bytes"`
	CPU         string  `json:"cpu"`
	Cores       int     `json:"cores"`
	Kernel      string  `json:"kernel"`
	GoVersion   string  `json:"go"`
	LoadAvgThen string  `json:"loadavg"` // when the limits were measured
}

// bulk is the serial lower bound of moving n of the dataset's records
// from one replica to another: compress, send, decompress, decode, store.
// Two cores could overlap some stages; no implementation can skip one.
func (l *limits) bulk(n int) float64 {
	f := float64(n) / float64(l.Records)
	net := float64(l.ZstdBytes) / (l.LoopMBps * 1e6) * 1e3
	return f * (l.ZstdEncMS + net + l.ZstdDecMS + l.JSONDecMS + l.BoltLoadMS)
}

func (b *bench) limits(ctx context.Context) error {
	l := &b.res.Limits
	l.Records, l.JSONBytes = len(b.ds.Lines), b.ds.JSONBytes
	l.Cores, l.GoVersion, l.CPU, l.Kernel = runtime.NumCPU(), runtime.Version(), cpuModel(), kernel()
	l.LoadAvgThen = loadAvg()
	if err := boltLimits(filepath.Join(b.tmp, "limits.db"), b.ds.Lines, l); err != nil {
		return err
	}
	if err := zstdLimits(b.ds.Lines, l); err != nil {
		return err
	}
	t := time.Now()
	for _, line := range b.ds.Lines {
		if err := caseload.DecodeLine(line); err != nil {
			return err
		}
	}
	l.JSONDecMS = ms(time.Since(t))
	return netLimits(ctx, l)
}

// boltLimits loads every line into a bbolt bucket, 1,000 per transaction
// with bbolt's default fsync, then times single small transactions.
func boltLimits(path string, lines [][]byte, l *limits) error {
	defer os.Remove(path)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	t := time.Now()
	for i := 0; i < len(lines); i += 1000 {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("records"))
			if err != nil {
				return err
			}
			for j, line := range lines[i:min(i+1000, len(lines))] {
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(i+j)), line); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	l.BoltLoadMS = ms(time.Since(t))
	var lat []float64
	for i := range 300 {
		t := time.Now()
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("single"))
			if err != nil {
				return err
			}
			return bk.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), lines[len(lines)-1-i%1000])
		})
		if err != nil {
			return err
		}
		lat = append(lat, ms(time.Since(t)))
	}
	l.FsyncP50MS, l.FsyncP99MS = pct(lat, 50), pct(lat, 99)
	return nil
}

// zstdLimits compresses the lines in 500-record frames with the settings
// of syncproto's codec (SpeedDefault, 1 MiB window), then decompresses
// them.
func zstdLimits(lines [][]byte, l *limits) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		return err
	}
	defer enc.Close()
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return err
	}
	defer dec.Close()
	var frames, plain [][]byte
	for i := 0; i < len(lines); i += 500 {
		plain = append(plain, bytes.Join(lines[i:min(i+500, len(lines))], []byte("\n")))
	}
	t := time.Now()
	for _, p := range plain {
		f := enc.EncodeAll(p, nil)
		frames = append(frames, f)
		l.ZstdBytes += int64(len(f))
	}
	l.ZstdEncMS = ms(time.Since(t))
	t = time.Now()
	for i, f := range frames {
		if _, err := dec.DecodeAll(f, make([]byte, 0, len(plain[i]))); err != nil {
			return err
		}
	}
	l.ZstdDecMS = ms(time.Since(t))
	return nil
}

// netLimits copies 512 MiB through a loopback TCP connection, then times
// 1-byte ping-pongs and connects.
func netLimits(ctx context.Context, l *limits) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if n == 1 { // a ping: answer it
						if _, err := c.Write(buf[:1]); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	d := net.Dialer{}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	const total = 512 << 20
	t := time.Now()
	if _, err := io.CopyN(c, bytes.NewReader(bytes.Repeat(buf, total/len(buf))), total); err != nil {
		return err
	}
	l.LoopMBps = total / 1e6 / time.Since(t).Seconds()
	c.Close()
	var rtt, conn []float64
	for range 200 {
		t := time.Now()
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		conn = append(conn, ms(time.Since(t)))
		for range 10 {
			t := time.Now()
			if _, err := c.Write([]byte{1}); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf[:1]); err != nil {
				return err
			}
			rtt = append(rtt, ms(time.Since(t)))
		}
		c.Close()
	}
	l.RTTMS, l.ConnectMS = median(rtt), median(conn)
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return string(trimNL(b))
}
