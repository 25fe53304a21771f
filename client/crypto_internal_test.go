package client

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/casesync/casesync/syncproto"
	"go.etcd.io/bbolt"
)

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// rawBolt opens a closed store's file with bbolt directly, as an attacker
// with the file would.
func rawBolt(t *testing.T, path string, fn func(tx *bbolt.Tx) error) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPassphraseTouchesNothing(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("right"))
	mustUpdate(t, s, func(tx *stx) error { return tx.putMeta(sampleMeta("tok", "A")) })
	s.close()
	before := fileSHA(t, path)
	for _, ks := range []keySource{passKS("wrong"), passKS("righ"), {keyFile: writeKey(t, randKey(t), false)}} {
		if _, err := openStore(path, ks, time.Second); !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("open with %+v = %v, want ErrWrongPassphrase", ks, err)
		}
	}
	if fileSHA(t, path) != before {
		t.Error("a failed unlock changed the file")
	}
	openTest(t, path, passKS("right"))
}

func TestNoKey(t *testing.T) {
	path := storePath(t)
	if _, err := openStore(path, keySource{kdf: testKDF}, time.Second); !errors.Is(err, ErrNoKey) {
		t.Errorf("open without a key = %v, want ErrNoKey", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Error("open without a key created a file")
	}
}

func randKey(t *testing.T) []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

func writeKey(t *testing.T, key []byte, asHex bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "store.key")
	b := key
	if asHex {
		b = []byte(hex.EncodeToString(key) + "\r\n")
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKeyFile(t *testing.T) {
	for _, asHex := range []bool{false, true} {
		t.Run(fmt.Sprint("hex=", asHex), func(t *testing.T) {
			path, key := storePath(t), randKey(t)
			s := openTest(t, path, keySource{keyFile: writeKey(t, key, asHex)})
			mustUpdate(t, s, func(tx *stx) error { return tx.putMeta(Meta{Token: "tok"}) })
			s.close()
			// The same key in the other encoding opens it.
			s = openTest(t, path, keySource{keyFile: writeKey(t, key, !asHex)})
			mustView(t, s, func(tx *stx) error {
				if m, err := tx.meta(); m.Token != "tok" || err != nil {
					t.Errorf("meta = %+v, %v", m, err)
				}
				return nil
			})
			s.close()
			before := fileSHA(t, path)
			bad := map[string]keySource{
				"other key":     {keyFile: writeKey(t, randKey(t), asHex)},
				"malformed":     {keyFile: writeKey(t, []byte("not a key at all"), false)},
				"passphrase":    passKS("pw"),
				"odd hex":       {keyFile: writeKey(t, []byte(strings.Repeat("zz", 32)), false)},
				"key and extra": {keyFile: writeKey(t, append(bytes.Clone(key), '\n'), false)},
			}
			for name, ks := range bad {
				if _, err := openStore(path, ks, time.Second); !errors.Is(err, ErrWrongPassphrase) {
					t.Errorf("%s: open = %v, want ErrWrongPassphrase", name, err)
				}
			}
			if _, err := openStore(path, keySource{keyFile: path + ".nokey"}, time.Second); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("missing key file: %v", err)
			}
			if fileSHA(t, path) != before {
				t.Error("a failed unlock changed the file")
			}
		})
	}
}

func TestDefaultKDF(t *testing.T) {
	path := storePath(t)
	start := time.Now()
	s := openTest(t, path, keySource{passphrase: []byte("a long passphrase")}) // zero kdf means DefaultKDF
	t.Logf("create with DefaultKDF %+v: %v", DefaultKDF, time.Since(start))
	s.close()
	raw, hdr, err := readHeader(path, time.Second)
	if err != nil || hdr.params() != DefaultKDF || hdr.KDF != kdfArgon2id || len(hdr.Salt) != saltLen {
		t.Fatalf("header %s, %v", raw, err)
	}
	// Opening uses the parameters in the header, not the caller's.
	start = time.Now()
	openTest(t, path, passKS("a long passphrase"))
	t.Logf("open with DefaultKDF: %v", time.Since(start))
}

// markers are stand-ins for the most sensitive things a store holds.
var markers = map[string]string{
	"tenant":     "Tenant-Marker-Jansen-7f3a",
	"note":       "Note-Marker-eviction-threat-c0ffee",
	"area":       "Area-Marker-Lombok-Oost-91",
	"token":      "Token-Marker-s3cr3t-b6e2",
	"rejected":   "Rejected-Marker-5d1e",
	"passphrase": "Passphrase-Marker-9a9a",
}

func assertNoMarkers(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for what, m := range markers {
		for _, form := range []string{m, strings.ToLower(m), hex.EncodeToString([]byte(m))} {
			if bytes.Contains(b, []byte(form)) {
				t.Errorf("%s: the %s appears in plaintext (%q)", filepath.Base(path), what, form)
			}
		}
	}
}

func TestNoPlaintextOnDisk(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS(markers["passphrase"]))
	area := markers["area"]
	mustUpdate(t, s, func(tx *stx) error {
		m := sampleMeta(markers["token"], area)
		m.User = markers["tenant"]
		k := syncproto.Key{Collection: syncproto.Entries, ID: "01HZENTRY000000000000000B1"}
		return errors.Join(tx.putMeta(m),
			tx.putRecord(caseRecord("01HZCASE0000000000000000A1", area, markers["tenant"])),
			tx.putRecord(entryRecord(k.ID, area, markers["note"])),
			tx.appendOutbox(change(1, k.Collection, k.ID, markers["note"]+" edited")),
			tx.putRejected(Rejected{Change: change(2, k.Collection, k.ID, markers["rejected"]),
				Error: syncproto.Error{Code: syncproto.CodeScope, Message: "not in " + area}, At: t0}),
			tx.markEvicted(k))
	})
	mustUpdate(t, s, func(tx *stx) error {
		return tx.deleteRecord(syncproto.Key{Collection: syncproto.Cases, ID: "01HZCASE0000000000000000A1"})
	})
	assertNoMarkers(t, path)
	if err := s.compact(); err != nil {
		t.Fatal(err)
	}
	assertNoMarkers(t, path)
	if _, err := os.Stat(path + compactSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("compaction left %s behind: %v", path+compactSuffix, err)
	}
}

// sealedValue returns a copy of the sealed bytes at bucket/key.
func sealedValue(t *testing.T, tx *bbolt.Tx, bucket, key []byte) []byte {
	t.Helper()
	v := tx.Bucket(bucket).Get(key)
	if v == nil {
		t.Fatalf("no value at %s %q", bucket, key)
	}
	return bytes.Clone(v)
}

func TestTamperedValueIsCorrupt(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	k1, k2 := syncproto.Key{Collection: syncproto.Cases, ID: "c1"}, syncproto.Key{Collection: syncproto.Cases, ID: "c2"}
	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.putRecord(caseRecord("c1", "A", "T1")), tx.putRecord(caseRecord("c2", "A", "T2")))
	})
	var sealed []byte
	mustView(t, s, func(tx *stx) error { sealed = sealedValue(t, tx.tx, bucketRecords, []byte(k1.String())); return nil })
	s.close()

	// Flip one ciphertext bit in every copy of the value in the file, the
	// way an attacker editing the copied file would.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)/2] ^= 0x01
	if n := bytes.Count(b, sealed); n == 0 {
		t.Fatal("sealed value not found in the file")
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(b, sealed, tampered), 0o600); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path, passKS("pw"))
	mustView(t, s, func(tx *stx) error {
		if r, _, err := tx.record(k1); !errors.Is(err, ErrCorrupt) {
			t.Errorf("tampered record = %+v, %v; want ErrCorrupt", r, err)
		}
		if _, ok, err := tx.record(k2); !ok || err != nil {
			t.Errorf("untouched record: %v %v", ok, err)
		}
		if err := tx.forEachRecord(func(*syncproto.Record) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("forEachRecord over a tampered record = %v", err)
		}
		return nil
	})
}

func TestSwappedValuesAreCorrupt(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	k1, k2 := syncproto.Key{Collection: syncproto.Cases, ID: "c1"}, syncproto.Key{Collection: syncproto.Cases, ID: "c2"}
	mustUpdate(t, s, func(tx *stx) error {
		return errors.Join(tx.putRecord(caseRecord("c1", "A", "T1")), tx.putRecord(caseRecord("c2", "A", "T2")),
			tx.appendOutbox(change(1, k1.Collection, k1.ID, "a")), tx.appendOutbox(change(2, k2.Collection, k2.ID, "b")),
			tx.putRejected(Rejected{Change: change(3, k1.Collection, k1.ID, "c")}),
			tx.putRejected(Rejected{Change: change(4, k2.Collection, k2.ID, "d")}), tx.markEvicted(k1))
	})
	s.close()
	rk1, rk2 := []byte(k1.String()), []byte(k2.String())
	rawBolt(t, path, func(tx *bbolt.Tx) error {
		rec, ob := tx.Bucket(bucketRecords), tx.Bucket(bucketOutbox)
		v1, v2 := sealedValue(t, tx, bucketRecords, rk1), sealedValue(t, tx, bucketRecords, rk2)
		o1, o2 := sealedValue(t, tx, bucketOutbox, seqKey(1)), sealedValue(t, tx, bucketOutbox, seqKey(2))
		e1, j4 := sealedValue(t, tx, bucketEvicted, rk1), sealedValue(t, tx, bucketRejected, seqKey(4))
		return errors.Join(rec.Put(rk1, v2), rec.Put(rk2, v1), ob.Put(seqKey(1), o2), ob.Put(seqKey(2), o1),
			// The same key in another bucket: a record planted as an eviction
			// marker, an outbox change planted as a rejected one.
			tx.Bucket(bucketEvicted).Put(rk1, v1), tx.Bucket(bucketRejected).Put(seqKey(1), o1),
			// Within one bucket, where the value itself names no key: an
			// eviction marker copied to another record, a rejected entry
			// copied to another sequence number.
			tx.Bucket(bucketEvicted).Put(rk2, e1), tx.Bucket(bucketRejected).Put(seqKey(5), j4))
	})
	s = openTest(t, path, passKS("pw"))
	mustView(t, s, func(tx *stx) error {
		for _, k := range []syncproto.Key{k1, k2} {
			if r, _, err := tx.record(k); !errors.Is(err, ErrCorrupt) {
				t.Errorf("swapped record %s = %+v, %v; want ErrCorrupt", k, r, err)
			}
		}
		if c, err := tx.outbox(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("swapped outbox = %+v, %v", c, err)
		}
		for _, k := range []syncproto.Key{k1, k2} {
			if _, err := tx.isEvicted(k); !errors.Is(err, ErrCorrupt) {
				t.Errorf("planted eviction marker for %s: %v", k, err)
			}
		}
		if r, err := tx.rejected(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("planted rejected entry = %+v, %v", r, err)
		}
		return nil
	})
	// Removing the planted entries one by one: each alone is caught, and
	// what is left afterwards reads fine.
	for _, seq := range []uint64{1, 5} {
		mustUpdate(t, s, func(tx *stx) error { return tx.removeRejected(seq) })
		mustView(t, s, func(tx *stx) error {
			r, err := tx.rejected()
			if (seq == 1 && !errors.Is(err, ErrCorrupt)) || (seq == 5 && (err != nil || len(r) != 2)) {
				t.Errorf("rejected after removing %d = %+v, %v", seq, r, err)
			}
			return nil
		})
	}
}

func TestCompactForgetsDeletedData(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	pad := strings.Repeat("lorem ipsum ", 80)
	key := func(i int) syncproto.Key {
		return syncproto.Key{Collection: syncproto.Entries, ID: fmt.Sprintf("E%04d", i)}
	}
	const n, keep = 600, 60
	mustUpdate(t, s, func(tx *stx) error {
		for i := range n {
			if err := tx.putRecord(entryRecord(key(i).ID, "A", fmt.Sprintf("note %d %s", i, pad))); err != nil {
				return err
			}
		}
		return nil
	})
	var deleted [][]byte
	mustUpdate(t, s, func(tx *stx) error {
		for i := keep; i < n; i++ {
			deleted = append(deleted, sealedValue(t, tx.tx, bucketRecords, []byte(key(i).String())))
			if err := tx.deleteRecord(key(i)); err != nil {
				return err
			}
		}
		return nil
	})
	countIn := func() (found int, size int) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deleted {
			if bytes.Contains(b, d) {
				found++
			}
		}
		return found, len(b)
	}
	// This is what compact is for: bbolt leaves freed pages as they were.
	foundBefore, sizeBefore := countIn()
	if foundBefore == 0 {
		t.Fatal("deleted values already gone before compact; the test no longer shows anything")
	}
	if err := s.compact(); err != nil {
		t.Fatal(err)
	}
	foundAfter, sizeAfter := countIn()
	t.Logf("%d deleted values in free pages before compact, %d after; %d → %d bytes", foundBefore, foundAfter, sizeBefore, sizeAfter)
	if foundAfter != 0 || sizeAfter >= sizeBefore/2 {
		t.Errorf("after compact: %d deleted values still in the file, size %d → %d", foundAfter, sizeBefore, sizeAfter)
	}
	if _, err := os.Stat(path + compactSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("compaction left %s behind: %v", path+compactSuffix, err)
	}
	// The store works on, and survives a reopen.
	mustUpdate(t, s, func(tx *stx) error { return tx.putMeta(Meta{Device: "d"}) })
	s.close()
	s = openTest(t, path, passKS("pw"))
	mustView(t, s, func(tx *stx) error {
		count := 0
		if err := tx.forEachRecord(func(*syncproto.Record) error { count++; return nil }); err != nil || count != keep {
			t.Errorf("after compact and reopen: %d records, %v; want %d", count, err, keep)
		}
		if m, _ := tx.meta(); m.Device != "d" {
			t.Error("write after compact lost")
		}
		return nil
	})
}

func TestDamagedFileIsCorrupt(t *testing.T) {
	path := storePath(t)
	s := openTest(t, path, passKS("pw"))
	victim := syncproto.Key{Collection: syncproto.Entries, ID: "E0100"}
	mustUpdate(t, s, func(tx *stx) error {
		for i := range 200 {
			if err := tx.putRecord(entryRecord(fmt.Sprintf("E%04d", i), "A", strings.Repeat("x", 500))); err != nil {
				return err
			}
		}
		return nil
	})
	var sealed []byte
	var pageSize int
	mustView(t, s, func(tx *stx) error {
		sealed, pageSize = sealedValue(t, tx.tx, bucketRecords, []byte(victim.String())), tx.tx.DB().Info().PageSize
		return nil
	})
	s.close()
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 64<<10)
	rand.Read(garbage)
	zeroed := bytes.Clone(whole)
	clear(zeroed[4*pageSize:]) // meta pages intact, the rest gone
	// One leaf page's header smashed: the file opens, reading that page
	// makes bbolt panic, and the store must report damage instead.
	leaf := bytes.Clone(whole)
	off := bytes.LastIndex(leaf, sealed) / pageSize * pageSize
	clear(leaf[off : off+16])

	for name, content := range map[string][]byte{"garbage": garbage, "zeroed pages": zeroed, "truncated": whole[:len(whole)/3], "leaf page": leaf} {
		p := filepath.Join(t.TempDir(), "damaged.db")
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := openStore(p, passKS("pw"), time.Second)
		if err == nil {
			err = s.view(func(tx *stx) error { return tx.forEachRecord(func(*syncproto.Record) error { return nil }) })
			s.close()
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
