package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// podman runs podman against a benchmark store, with private config files
// so the host's configuration does not matter.
type podman struct {
	si  *storeInfo
	env []string
}

func newPodman(si *storeInfo, dir string) (*podman, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	files := map[string]string{
		"containers.conf": fmt.Sprintf("[engine]\ntmp_dir = %q\nevents_logger = \"file\"\nevents_logfile_path = %q\ncgroup_manager = \"cgroupfs\"\n",
			filepath.Join(dir, "tmp"), filepath.Join(dir, "events.log")),
		"registries.conf": "unqualified-search-registries = []\n",
		"storage.conf":    fmt.Sprintf("[storage]\ndriver = \"overlay\"\nrunroot = %q\ngraphroot = %q\n", si.Run, si.Graph),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return nil, err
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF", "CONTAINERS_CONF_OVERRIDE", "CONTAINERS_REGISTRIES_CONF":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"))
	return &podman{si: si, env: env}, nil
}

func (p *podman) argv(args ...string) []string {
	return append([]string{"podman", "--root", p.si.Graph, "--runroot", p.si.Run, "--storage-driver", "overlay"}, args...)
}

// scaleBench runs the metadata and memory workloads on the scale store:
// imagefs (mounted on it) against podman.
func (r *runner) scaleBench(iv *imagefsView, si *storeInfo, pm *podman) {
	if r.cfg.want("meta-inspect") {
		r.metaInspect(iv, si, pm)
	}
	if r.cfg.want("names") {
		r.namesList(iv, si)
	}
	if r.cfg.want("tag-visible") {
		r.tagVisible(iv, si, pm)
	}
	if r.cfg.want("idle-rss") {
		r.idleRSS(iv, si)
	}
	if r.cfg.want("walk-all") {
		r.walkAll(iv, si)
	}
}

// metaInspect: config + inspect.json of every image vs one podman image
// inspect of the same images.
func (r *runner) metaInspect(iv *imagefsView, si *storeInfo, pm *podman) {
	mnt := iv.mnt
	res := r.newResult("meta-inspect", fmt.Sprintf("cat config + inspect.json of %d images", len(si.Images)), budget{podmanX: 10})
	var ids []string
	for _, img := range si.Images {
		ids = append(ids, img.ID)
	}
	r.timeImagefs(res, iv, shell("cat images/*/config images/*/inspect.json | wc -c")(nil), mnt)
	// One podman run: it is slow (tens of seconds at 1000 images), and the
	// imagefs runs before it have already brought the store's files into
	// the page cache.
	var ps []sample
	start := time.Now()
	if _, err := r.exec("/", pm.env, append(pm.argv("image", "inspect"), ids...)...); err != nil {
		res.errs = append(res.errs, "podman: image inspect: "+err.Error())
	} else {
		ps = append(ps, sample{wall: time.Since(start)})
	}
	if len(ps) > 0 {
		res.set(podmanName, ps)
	}
	logf("  %-36s %s", res.title, res.summary())

}

// namesList: ls -l names/ + find names -type l.
func (r *runner) namesList(iv *imagefsView, si *storeInfo) {
	mnt := iv.mnt
	res := r.newResult("names", fmt.Sprintf("ls -l names/ + find names -type l (%d names)", si.Names), budget{maxTime: 50 * time.Millisecond})
	r.timeImagefs(res, iv, shell("ls -l names/ >/dev/null && find names -type l | wc -l")(nil), mnt)
	if out := res.out; out != "" && out != fmt.Sprint(si.Names) {
		res.notes = append(res.notes, fmt.Sprintf("find names -type l found %s names, the store has %d", out, si.Names))
	}
	logf("  %-36s %s", res.title, res.summary())

}

// idleRSS: the RSS of a fresh mount after listing names/ and images/.
func (r *runner) idleRSS(iv *imagefsView, si *storeInfo) {
	mnt := iv.mnt
	res := r.newResult("idle-rss", fmt.Sprintf("idle RSS after mount + ls, %d images", len(si.Images)), budget{maxRSSMB: 40})
	if err := r.remount(iv); err != nil {
		res.errs = append(res.errs, err.Error())
	} else if _, err := r.exec(mnt, nil, "sh", "-c", "ls names images >/dev/null"); err != nil {
		res.errs = append(res.errs, err.Error())
	} else {
		// Idle: the server returns what the listing left behind after its
		// first quiet second (cmd/imagefs/memory.go), within 2 s.
		time.Sleep(3 * time.Second)
		if st, err := readProcStats(iv.pid()); err == nil {
			res.rssMB = float64(st.rssKB) / 1024
			res.peakMB[imagefsName] = float64(st.hwmKB) / 1024
		}
	}
	logf("  %-36s %s", res.title, res.summary())

}

// walkAll: find over every image's rootfs; the peak RSS it causes.
func (r *runner) walkAll(iv *imagefsView, si *storeInfo) {
	mnt, pid := iv.mnt, iv.pid
	res := r.newResult("walk-all", fmt.Sprintf("find images/*/rootfs (%d images), peak RSS", len(si.Images)), budget{maxRSSMB: 300})
	resetPeak(pid())
	before, _ := readProcStats(pid())
	start := time.Now()
	out, err := r.exec(mnt, nil, "sh", "-c", "find images/*/rootfs | wc -l")
	if err != nil {
		res.errs = append(res.errs, "imagefs: "+err.Error())
	} else {
		s := sample{wall: time.Since(start), out: out}
		if after, err := readProcStats(pid()); err == nil {
			s.cpu, s.hwmKB = after.cpu-before.cpu, after.hwmKB
			res.rssMB = float64(after.hwmKB) / 1024
			res.notes = append(res.notes, fmt.Sprintf("%s entries; RSS %.0f MB right after the walk", out, float64(after.rssKB)/1024))
		}
		res.set(imagefsName, []sample{s})
	}
	logf("  %-36s %s", res.title, res.summary())
}

// timeImagefs runs argv in dir on the imagefs view: one warm-up, then reps.
func (r *runner) timeImagefs(res *result, iv *imagefsView, argv []string, dir string) {
	var ss []sample
	for rep := -1; rep < r.cfg.reps; rep++ {
		pid := iv.pid()
		resetPeak(pid)
		before, _ := readProcStats(pid)
		start := time.Now()
		out, err := r.exec(dir, nil, argv...)
		if err != nil {
			res.errs = append(res.errs, "imagefs: "+err.Error())
			return
		}
		s := sample{wall: time.Since(start), out: out}
		if after, err := readProcStats(pid); err == nil {
			s.cpu, s.hwmKB = after.cpu-before.cpu, after.hwmKB
		}
		if rep >= 0 {
			ss = append(ss, s)
		}
		res.out = out
	}
	res.set(imagefsName, ss)
}

// tagVisible times how long a `podman tag` takes to show in names/ (from
// podman's exit to the first successful lstat).
func (r *runner) tagVisible(iv *imagefsView, si *storeInfo, pm *podman) {
	res := r.newResult("tag-visible", "podman tag → visible in names/", budget{maxTime: time.Second})
	defer func() { logf("  %-36s %s", res.title, res.summary()) }()
	id := si.Images[0].ID
	var ss []sample
	var podmanTimes []sample
	for rep := range r.cfg.reps {
		name := fmt.Sprintf("localhost/scale/tagtest:r%d-%d", rep, os.Getpid())
		path := filepath.Join(iv.mnt, "names", name)
		start := time.Now()
		if _, err := r.exec("/", pm.env, pm.argv("tag", id, name)...); err != nil {
			res.errs = append(res.errs, "podman tag: "+err.Error())
			return
		}
		tagged := time.Now()
		podmanTimes = append(podmanTimes, sample{wall: tagged.Sub(start)})
		deadline := tagged.Add(10 * time.Second)
		for {
			if _, err := os.Lstat(path); err == nil {
				ss = append(ss, sample{wall: time.Since(tagged)})
				break
			}
			if time.Now().After(deadline) {
				res.errs = append(res.errs, fmt.Sprintf("imagefs: %s not visible 10s after podman tag", path))
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		if _, err := r.exec("/", pm.env, pm.argv("untag", id, name)...); err != nil {
			res.errs = append(res.errs, "podman untag: "+err.Error())
			return
		}
	}
	if len(ss) > 0 {
		res.set(imagefsName, ss)
	}
	if len(podmanTimes) > 0 {
		res.set(podmanName, podmanTimes)
		res.notes = append(res.notes, "podman s is how long podman tag itself took")
	}
}

// mountFirstStat times `imagefs mount` (as users run it: it returns when
// the mount is ready) plus the first stat of an image through names/.
func (r *runner) mountFirstStat(iv *imagefsView, si *storeInfo) {
	res := r.newResult("mount-first-stat", fmt.Sprintf("imagefs mount → first stat (%d images)", len(si.Images)), budget{maxTime: 150 * time.Millisecond})
	defer func() { logf("  %-36s %s", res.title, res.summary()) }()
	var first string
	for _, img := range si.Images {
		if len(img.Names) > 0 {
			first = img.Names[0]
			break
		}
	}
	mnt := iv.mnt + "-firststat"
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		res.errs = append(res.errs, err.Error())
		return
	}
	var ss []sample
	for range r.cfg.reps {
		start := time.Now()
		if _, err := r.exec("/", iv.env(), append([]string{iv.bin}, append(iv.args(false), mnt)...)...); err != nil {
			res.errs = append(res.errs, "imagefs: mount: "+err.Error())
			return
		}
		_, serr := os.Stat(filepath.Join(mnt, "names", first))
		s := sample{wall: time.Since(start)}
		if _, err := r.exec("/", iv.env(), iv.bin, "umount", mnt); err != nil {
			res.errs = append(res.errs, "imagefs: umount: "+err.Error())
			_ = unmountRetry(mnt)
			return
		}
		if serr != nil {
			res.errs = append(res.errs, "imagefs: stat: "+serr.Error())
			return
		}
		ss = append(ss, s)
	}
	res.set(imagefsName, ss)
}
