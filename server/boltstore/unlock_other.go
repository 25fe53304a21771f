//go:build !unix

package boltstore

import "os"

// unlock does nothing here: closing the file releases bbolt's lock.
func unlock(*os.File) {}
