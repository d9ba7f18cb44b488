package test

// For a bounded time, podman tags, untags, imports and removes in other
// processes while walkers read the whole mount and a writer tags, moves
// and removes names through it. The only errors allowed are ENOENT races
// (something vanished between listing and reading); at the end the mount,
// podman and a fresh mount agree.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	imgfs "github.com/imagefs/imagefs/fs"
	"github.com/imagefs/imagefs/storageview"
)

const concurrencyTime = 8 * time.Second

// errorLog collects unexpected errors of the workers.
type errorLog struct {
	mu   sync.Mutex
	errs []string
	n    map[string]int // operations done, by worker
}

func (l *errorLog) add(who string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 50 {
		l.errs = append(l.errs, who+": "+err.Error())
	}
}

func (l *errorLog) done(who string) {
	l.mu.Lock()
	l.n[who]++
	l.mu.Unlock()
}

// raced reports whether err is the race a reader may meet: the entry went
// away between listing and using it.
func raced(err error) bool { return errors.Is(err, syscall.ENOENT) }

// mountNames lists every name under names/ of a mount, by walking it.
func mountNames(mnt string) ([]string, error) {
	root := filepath.Join(mnt, "names")
	var names []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			rel, _ := filepath.Rel(root, p)
			names = append(names, rel)
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

// mountImages lists images/.
func mountImages(mnt string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(mnt, "images"))
	var ids []string
	for _, e := range ents {
		ids = append(ids, e.Name())
	}
	return ids, err
}

func TestConcurrency(t *testing.T) {
	e := newWenv(t, "overlay", storageview.Options{}, imgfs.Options{Debug: os.Getenv("IFS_DEBUG") != ""})
	tarball := filepath.Join(t.TempDir(), "c.tar")
	if err := os.WriteFile(tarball, tarOfFiles(t, map[string]string{"c": "c\n"}), 0o644); err != nil {
		t.Fatal(err)
	}
	errs := &errorLog{n: map[string]int{}}
	stop := time.Now().Add(concurrencyTime)
	var wg sync.WaitGroup
	worker := func(who string, step func(i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if err := step(i); err != nil {
					errs.add(who, err)
				}
				errs.done(who)
			}
		}()
	}

	// podman, in other processes: tag, untag, import, rmi.
	worker("podman", func(i int) error {
		var args []string
		switch i % 4 {
		case 0:
			args = []string{"tag", e.tool.ID, fmt.Sprintf("localhost/conc/p:%d", i)}
		case 1:
			args = []string{"untag", e.tool.ID, fmt.Sprintf("localhost/conc/p:%d", i-1)}
		case 2:
			args = []string{"import", tarball, fmt.Sprintf("localhost/conc/imp:%d", i)}
		case 3:
			args = []string{"rmi", fmt.Sprintf("localhost/conc/imp:%d", i-1)}
		}
		if out, err := e.s.Podman(args...).CombinedOutput(); err != nil {
			return fmt.Errorf("podman %v: %v: %s", args, err, out)
		}
		return nil
	})

	// Walkers: everything but the root file systems, every file read,
	// every link read.
	walk := func(int) error {
		var bad error
		_ = filepath.WalkDir(e.mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if !raced(err) && bad == nil {
					bad = err
				}
				return nil
			}
			switch {
			case d.IsDir() && (d.Name() == "rootfs" || d.Name() == "diff"):
				return filepath.SkipDir
			case d.Type()&fs.ModeSymlink != 0:
				_, err = os.Readlink(p)
			case d.Type().IsRegular():
				_, err = os.ReadFile(p)
			}
			if err != nil && !raced(err) && bad == nil {
				bad = err
			}
			return nil
		})
		return bad
	}
	worker("walker1", walk)
	worker("walker2", walk)

	// A writer through the mount: mkdir -p, ln -s, mv, rm.
	worker("writer", func(i int) error {
		dir := e.p("names/localhost/conc")
		a := filepath.Join(dir, fmt.Sprintf("m%d:1", i))
		b := filepath.Join(dir, fmt.Sprintf("m%d:2", i))
		for try := 0; ; try++ {
			if err := os.MkdirAll(dir, 0o755); err != nil && !raced(err) {
				return fmt.Errorf("mkdir -p: %w", err)
			}
			err := os.Symlink("../../../images/"+e.base.ID, a)
			if err == nil {
				break
			}
			// The directory can vanish between mkdir and ln -s when
			// podman removes the last name in it.
			if !raced(err) || try == 5 {
				return fmt.Errorf("ln -s: %w", err)
			}
		}
		if err := os.Rename(a, b); err != nil {
			// Seen once in about 40 runs (ENOENT, nothing logged): say
			// whether the store still had the name, and the tree then.
			stored := "?"
			if img, serr := e.v.Store().Image(e.base.ID); serr == nil {
				stored = fmt.Sprint(slices.Contains(img.Names, "localhost/conc/"+filepath.Base(a)))
			}
			_, lerr := os.Lstat(a)
			return fmt.Errorf("mv: %w (the store has the name: %s; lstat now: %v)", err, stored, lerr)
		}
		if err := os.Remove(b); err != nil {
			return fmt.Errorf("rm: %w", err)
		}
		return nil
	})

	wg.Wait()
	t.Logf("operations done: %v", errs.n)
	for _, err := range errs.errs {
		t.Errorf("unexpected error: %s", err)
	}
	if len(errs.errs) > 0 {
		for _, l := range e.logs.lines() {
			t.Logf("log: %s", l)
		}
	}
	for _, who := range []string{"podman", "walker1", "walker2", "writer"} {
		if errs.n[who] < 2 {
			t.Errorf("%s did only %d operations", who, errs.n[who])
		}
	}

	// The mount settles on podman's view.
	podmanState := func() ([]string, []string) {
		var names, ids []string
		for id, ns := range e.repoTags() {
			ids = append(ids, id)
			names = append(names, ns...)
		}
		sort.Strings(names)
		sort.Strings(ids)
		return names, ids
	}
	wantNames, wantIDs := podmanState()
	var mounted []string
	eventually(t, "the mount agreeing with podman", func() error {
		var err error
		if mounted, err = mountNames(e.mnt); err != nil {
			return err
		}
		ids, err := mountImages(e.mnt)
		if err != nil {
			return err
		}
		if !slices.Equal(mounted, wantNames) || !slices.Equal(ids, wantIDs) {
			return fmt.Errorf("names %v, podman %v; images %v, podman %v", mounted, wantNames, ids, wantIDs)
		}
		return nil
	})

	// A fresh mount of the same store agrees too. (One store object per
	// process: the first mount, which owns it, goes first.)
	e.unmount()
	mnt2, _ := mountInProcess(t, openWritesView(t, e.s, storageview.Options{}, &logBuf{}), imgfs.Options{})
	fresh, err := mountNames(mnt2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fresh, mounted) {
		t.Errorf("a fresh mount shows %v, the long-running one %v", fresh, mounted)
	}
	if ids, err := mountImages(mnt2); err != nil || !slices.Equal(ids, wantIDs) {
		t.Errorf("a fresh mount lists images %v (%v), podman %v", ids, err, wantIDs)
	}
	if strings.Join(wantNames, " ") == "" {
		t.Errorf("podman lists no names at all")
	}
}
