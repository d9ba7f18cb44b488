package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/imagefs/imagefs/fs"
)

func newUmountCmd() *cobra.Command {
	var (
		lazy    bool
		abort   bool
		timeout time.Duration
	)
	c := &cobra.Command{
		Use:     "umount [flags] MOUNTPOINT",
		Aliases: []string{"unmount"},
		Short:   "Unmount an imagefs mount and wait for its process to exit",
		Long: `Unmount the imagefs mount at MOUNTPOINT, then wait until the serving
process has closed the store and exited. A busy mount (a process has a file
or its working directory in it) is left alone unless --lazy is given: then it
is detached at once and the serving process exits when its last user leaves.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("umount takes exactly one MOUNTPOINT, got %d arguments (see imagefs umount --help)", len(args))
			}
			if args[0] == "" {
				return fmt.Errorf("umount: the MOUNTPOINT given is empty")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %s: give a positive duration (30s, 2m)", timeout)
			}
			return umount(args[0], lazy, abort, timeout)
		},
	}
	c.Flags().BoolVarP(&lazy, "lazy", "l", false, "detach a busy mount now; do not wait for the serving process")
	c.Flags().BoolVar(&abort, "abort", false, "end the mount's FUSE connection first (root; for a server that hangs): whatever waits on it fails with ENOTCONN")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the serving process to exit")
	return c
}

func umount(mountpoint string, lazy, abort bool, timeout time.Duration) error {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	// Resolve symlinks in the parent only: the mount point itself may be a
	// dead FUSE mount that cannot be stat'ed.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		abs = filepath.Join(dir, filepath.Base(abs))
	}
	m, err := fs.FindMount(abs)
	if err != nil {
		return err
	}
	if m == nil {
		// MOUNTPOINT may be a symlink to the mount point.
		if r, rerr := filepath.EvalSymlinks(abs); rerr == nil && r != abs {
			abs = r
			if m, err = fs.FindMount(abs); err != nil {
				return err
			}
		}
	}
	if m == nil {
		if _, err := os.Lstat(abs); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s does not exist", mountpoint)
		}
		return fmt.Errorf("%s is not mounted", mountpoint)
	}
	if m.FSType != fs.FSType {
		return fmt.Errorf("%s is not an imagefs mount (it is %s); refusing to unmount it", mountpoint, m.FSType)
	}
	if uid := os.Geteuid(); uid != 0 && m.UserID >= 0 && m.UserID != uid {
		return fmt.Errorf("%s was mounted by uid %d: only root or that user may unmount it", mountpoint, m.UserID)
	}
	if abort {
		if err := fs.AbortConnection(m); err != nil {
			return err
		}
		lazy = true // what still uses the mount gets ENOTCONN, not a busy mount
	}
	if err := fs.Unmount(abs, lazy); err != nil {
		if errors.Is(err, fs.ErrBusy) {
			return fmt.Errorf("%s is busy: a process has a file or its working directory in it, or waits on it "+
				"(close it, or use imagefs umount --lazy; for a server that hangs, imagefs umount --abort)", mountpoint)
		}
		return err
	}
	if lazy && !abort {
		return nil
	}
	return fs.WaitServerExit(abs, m.UserID, timeout)
}
