package main

import (
	"bufio"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/imagefs/imagefs/fs"
)

// Background mode: `imagefs mount` re-executes itself (/proc/self/exe) as
// the serving process, in a new session, with fd 3 the write end of a pipe
// and readyFDVar naming it. The child mounts and writes one line to the
// pipe, "ok" or "error <message>"; the parent waits for that line and
// exits 0, or prints the message and exits 1. So every error that stops a
// mount (mountpoint, FUSE, store) is reported by the command the user ran,
// as one line, and `imagefs mount` returns only when the tree is usable.

// readyFDVar tells a re-executed imagefs that it is the serving process
// and which fd reports readiness.
const readyFDVar = "_IMAGEFS_READY_FD"

// startDaemon runs in the command the user started: it checks what it can
// cheaply, starts the serving process and waits for its report.
func startDaemon(mf *mountFlags, mountpoint string) error {
	if err := fs.CheckMountpoint(mountpoint); err != nil {
		return err
	}
	abs, err := resolveMountpoint(mountpoint)
	if err != nil {
		return err
	}
	if err := mf.checkStorePaths(); err != nil {
		return err
	}
	out, err := openLogFile(mf.logFile)
	if err != nil {
		return err
	}
	defer out.Close()
	args, err := daemonArgs(mf, abs)
	if err != nil {
		return err
	}

	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(daemonEnv(), readyFDVar+"=3")
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Dir = "/" // keep no directory busy
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// A signal while we wait is passed on: the child then unmounts (or
	// gives up) and we report failure.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting the serving process: %w", err)
	}
	w.Close()

	// First signal: ask the child to stop (it unmounts if it got that
	// far); second: kill it — it has not mounted, or it would have said so.
	interrupted := make(chan struct{})
	go func() {
		if _, ok := <-sigs; !ok {
			return
		}
		close(interrupted)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if _, ok := <-sigs; ok {
			_ = cmd.Process.Kill()
		}
	}()

	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSuffix(line, "\n")
	select {
	case <-interrupted:
		_ = cmd.Wait()
		return errors.New("mount: interrupted")
	default:
	}
	switch {
	case line == "ok":
		return cmd.Process.Release()
	case strings.HasPrefix(line, "error "):
		_ = cmd.Wait()
		return errors.New(strings.TrimPrefix(line, "error "))
	default:
		werr := cmd.Wait()
		hint := ""
		if mf.logFile != "" {
			hint = "; see " + mf.logFile
		} else {
			hint = "; run with -f to see why"
		}
		return fmt.Errorf("the serving process ended before the mount was ready (%v)%s", werr, hint)
	}
}

// daemonArgs are the serving process's arguments: the same mount, with
// every path made absolute (the child runs in /).
func daemonArgs(mf *mountFlags, mountpoint string) ([]string, error) {
	args := []string{"mount"}
	for _, p := range []struct {
		flag string
		val  *string
	}{{"--root", &mf.root}, {"--runroot", &mf.runroot}, {"--cpuprofile", &mf.cpuProfile}} {
		if *p.val == "" {
			continue
		}
		abs, err := filepath.Abs(*p.val)
		if err != nil {
			return nil, err
		}
		args = append(args, p.flag, abs)
	}
	if mf.driver != "" {
		args = append(args, "--storage-driver", mf.driver)
	}
	for _, o := range mf.storageOpts {
		args = append(args, "--storage-opt", o)
	}
	for _, b := range []struct {
		flag string
		val  bool
	}{{"--read-only", mf.readOnly}, {"--allow-other", mf.allowOther}, {"--debug", mf.debug}} {
		if b.val {
			args = append(args, b.flag)
		}
	}
	return append(args, "--", mountpoint), nil
}

// daemonEnv is our environment with relative paths the child would
// misread from / made absolute: the store's configuration, and where the
// run directory is (umount, in our directory, must find the same).
func daemonEnv() []string {
	env := os.Environ()
	for i, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "CONTAINERS_STORAGE_CONF", fs.RunDirVar, "XDG_RUNTIME_DIR", "TMPDIR":
		default:
			continue
		}
		if v != "" && !filepath.IsAbs(v) {
			if abs, err := filepath.Abs(v); err == nil {
				env[i] = k + "=" + abs
			}
		}
	}
	return env
}

// openLogFile opens the log for appending. A new one is private to the
// mounting user: it names paths inside the images (every request's, with
// --debug) that their modes may hide from others.
func openLogFile(path string) (*os.File, error) {
	if path == "" {
		return os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %s", oneLine(err.Error()))
	}
	return f, nil
}

// runDaemon runs in the serving process: mount, report on the pipe, serve.
func runDaemon(mf *mountFlags, mountpoint, fdVar string) error {
	os.Unsetenv(readyFDVar)
	fd, err := strconv.Atoi(fdVar)
	if err != nil || fd < 3 {
		return fmt.Errorf("bad %s=%q", readyFDVar, fdVar)
	}
	syscall.CloseOnExec(fd) // fusermount3 and friends must not hold it
	pipe := os.NewFile(uintptr(fd), "ready")
	logger := log.New(os.Stderr, fmt.Sprintf("imagefs[%d]: ", os.Getpid()), log.LstdFlags)
	err = serve(mf, mountpoint, logger, true, func(err error) {
		msg := "ok\n"
		if err != nil {
			msg = "error " + oneLine(err.Error()) + "\n"
		}
		_, _ = pipe.WriteString(msg)
		pipe.Close()
	})
	if err != nil {
		logger.Print(err) // our stderr is the log file: one line there, not two
		os.Exit(1)
	}
	return nil
}
