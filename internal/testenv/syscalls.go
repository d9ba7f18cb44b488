package testenv

import "golang.org/x/sys/unix"

// The system calls of the refusal tests that os has no function for.

// Fallocate opens the file at p for writing and fallocates its first 4 KiB,
// as fallocate(1) does.
func Fallocate(p string) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fallocate(fd, 0, 0, 4096)
}

// OpenTmpfile opens an unnamed file in directory dir (O_TMPFILE).
func OpenTmpfile(dir string) error {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// Fsync opens the file or directory at p read-only and calls fsync(2) and
// fdatasync(2) on it, as sync(1) FILE does.
func Fsync(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return err
	}
	return unix.Fdatasync(fd)
}
