package testenv

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// MmapWrite writes data at the start of the file at p through a shared
// writable mapping and returns what msync(2) says of writing it back (a
// read-only file system refuses it there, after the kernel changed its
// cached pages).
func MmapWrite(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	defer unix.Munmap(m)
	copy(m, data)
	return unix.Msync(m, unix.MS_SYNC)
}

// WaitContent fails the test unless the file at p reads want within a
// second (what a refused write changed in the kernel's cache is dropped
// asynchronously).
func WaitContent(t testing.TB, p, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(p)
		if got = string(b); err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s reads %q (%v), want %q", p, got, err, strings.TrimSpace(want))
			return
		}
	}
}
