package fs

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// MountInfo is one line of /proc/self/mountinfo.
type MountInfo struct {
	Mountpoint string // absolute, unescaped
	FSType     string // "fuse.imagefs" for our mounts
	Source     string // "imagefs" for our mounts
	UserID     int    // FUSE's user_id= option: who mounted it; -1 without
	Device     string // "major:minor"; a FUSE mount's minor numbers its connection
}

// FindMount returns the topmost mount whose mount point is exactly path
// (absolute, clean), or nil when path is not a mount point.
func FindMount(path string) (*MountInfo, error) {
	mounts, err := Mounts()
	if err != nil {
		return nil, err
	}
	var found *MountInfo
	for i := range mounts {
		if mounts[i].Mountpoint == path {
			found = &mounts[i] // later lines are mounted on top of earlier ones
		}
	}
	return found, nil
}

// Mounts lists the mounts of this process's mount namespace in
// /proc/self/mountinfo order.
func Mounts() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m, ok := parseMountInfo(sc.Text()); ok {
			out = append(out, m)
		}
	}
	return out, sc.Err()
}

// parseMountInfo parses "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw".
func parseMountInfo(line string) (MountInfo, bool) {
	fields := strings.Split(line, " ")
	if len(fields) < 10 {
		return MountInfo{}, false
	}
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || sep+2 >= len(fields) {
		return MountInfo{}, false
	}
	m := MountInfo{
		Mountpoint: unescapeOctal(fields[4]),
		FSType:     unescapeOctal(fields[sep+1]),
		Source:     unescapeOctal(fields[sep+2]),
		UserID:     -1,
		Device:     fields[2],
	}
	if sep+3 < len(fields) {
		for _, o := range strings.Split(fields[sep+3], ",") {
			if v, ok := strings.CutPrefix(o, "user_id="); ok {
				if id, err := strconv.Atoi(v); err == nil {
					m.UserID = id
				}
			}
		}
	}
	return m, true
}

// unescapeOctal undoes the \040-style escapes of /proc/self/mountinfo.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
