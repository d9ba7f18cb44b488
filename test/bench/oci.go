package main

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	istorage "go.podman.io/image/v5/storage"
	"go.podman.io/image/v5/types"
	"go.podman.io/storage"
)

// The benchmark stores are made the way podman pulls: layer tarballs
// (uncompressed) and a config are written as an OCI layout, then copied into
// a containers/storage overlay store with containers/image. Everything is
// generated here or taken from local files (mmdebstrap, GOROOT): no registry.

// epoch is the modification time of generated entries and images, so the
// generated layers are the same bytes on every build.
var epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// blob is a layer tarball in a layout's blob directory (uncompressed, so its
// digest is also its diff ID).
type blob struct {
	Digest digest.Digest
	Size   int64
}

// ociLayout is an OCI image layout directory being written.
type ociLayout struct {
	dir       string
	manifests []imgspecv1.Descriptor
}

func newLayout(dir string) (*ociLayout, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, err
	}
	err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return &ociLayout{dir: dir}, err
}

// writeBlob stores what write writes as a blob and returns its digest.
func (l *ociLayout) writeBlob(write func(w io.Writer) error) (blob, error) {
	f, err := os.CreateTemp(filepath.Join(l.dir, "blobs"), "tmp-")
	if err != nil {
		return blob{}, err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	cw := &countingWriter{w: io.MultiWriter(f, h)}
	if err := write(cw); err != nil {
		f.Close()
		return blob{}, err
	}
	if err := f.Close(); err != nil {
		return blob{}, err
	}
	d := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	if err := os.Rename(f.Name(), l.blobPath(d)); err != nil {
		return blob{}, err
	}
	return blob{Digest: d, Size: cw.n}, nil
}

// linkBlob adds an existing file (a cached tarball) as a blob: hard-linked
// when possible, copied otherwise.
func (l *ociLayout) linkBlob(path string) (blob, error) {
	f, err := os.Open(path)
	if err != nil {
		return blob{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return blob{}, err
	}
	d := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	dst := l.blobPath(d)
	if _, err := os.Stat(dst); err == nil {
		return blob{Digest: d, Size: n}, nil
	}
	if err := os.Link(path, dst); err != nil {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return blob{}, err
		}
		return l.writeBlob(func(w io.Writer) error { _, err := io.Copy(w, f); return err })
	}
	return blob{Digest: d, Size: n}, nil
}

func (l *ociLayout) blobPath(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", string(d.Algorithm()), d.Encoded())
}

func (l *ociLayout) writeJSON(v any) (blob, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return blob{}, err
	}
	return l.writeBlob(func(w io.Writer) error { _, err := w.Write(data); return err })
}

// imageSpec describes one image of a layout.
type imageSpec struct {
	ref     string // the layout's ref.name annotation of this image
	layers  []blob // base first
	history []string
	labels  map[string]string
	cmd     []string
}

// addImage writes the config and manifest of img; it returns the image ID
// (the config digest's hex) the store will give it.
func (l *ociLayout) addImage(img imageSpec) (string, error) {
	cfg := imgspecv1.Image{
		Created:  &epoch,
		Platform: imgspecv1.Platform{OS: "linux", Architecture: "amd64"},
		Config: imgspecv1.ImageConfig{
			Env:    []string{"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd:    img.cmd,
			Labels: img.labels,
		},
		RootFS: imgspecv1.RootFS{Type: "layers"},
	}
	man := imgspecv1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: imgspecv1.MediaTypeImageManifest,
	}
	for i, b := range img.layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, b.Digest)
		h := imgspecv1.History{Created: &epoch, CreatedBy: fmt.Sprintf("imagefs-bench layer %d", i)}
		if i < len(img.history) {
			h.CreatedBy = img.history[i]
		}
		cfg.History = append(cfg.History, h)
		man.Layers = append(man.Layers, imgspecv1.Descriptor{
			MediaType: imgspecv1.MediaTypeImageLayer, Digest: b.Digest, Size: b.Size,
		})
	}
	cb, err := l.writeJSON(cfg)
	if err != nil {
		return "", err
	}
	man.Config = imgspecv1.Descriptor{MediaType: imgspecv1.MediaTypeImageConfig, Digest: cb.Digest, Size: cb.Size}
	mb, err := l.writeJSON(man)
	if err != nil {
		return "", err
	}
	l.manifests = append(l.manifests, imgspecv1.Descriptor{
		MediaType:   imgspecv1.MediaTypeImageManifest,
		Digest:      mb.Digest,
		Size:        mb.Size,
		Annotations: map[string]string{imgspecv1.AnnotationRefName: img.ref},
	})
	return cb.Digest.Encoded(), nil
}

// finish writes index.json.
func (l *ociLayout) finish() error {
	idx := imgspecv1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: imgspecv1.MediaTypeImageIndex,
		Manifests: l.manifests,
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.dir, "index.json"), data, 0o644)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// storeHandle is an open containers/storage overlay store.
type storeHandle struct {
	graph, run string
	store      storage.Store
	policy     *signature.PolicyContext
	sys        *types.SystemContext
}

func openStore(graph, run string) (*storeHandle, error) {
	st, err := storage.GetStore(storage.StoreOptions{
		GraphRoot:       graph,
		RunRoot:         run,
		GraphDriverName: "overlay",
	})
	if err != nil {
		return nil, fmt.Errorf("opening the overlay store %s: %w", graph, err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	})
	if err != nil {
		_, _ = st.Shutdown(true)
		return nil, err
	}
	// Keep containers/image away from the host's registries.conf,
	// policy.json and auth files.
	empty := filepath.Join(run, "bench-conf")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		_, _ = st.Shutdown(true)
		return nil, err
	}
	rc := filepath.Join(empty, "registries.conf")
	if err := os.WriteFile(rc, []byte("unqualified-search-registries = []\n"), 0o644); err != nil {
		_, _ = st.Shutdown(true)
		return nil, err
	}
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    rc,
		SystemRegistriesConfDirPath: empty,
		RegistriesDirPath:           empty,
		AuthFilePath:                filepath.Join(empty, "auth.json"),
	}
	return &storeHandle{graph: graph, run: run, store: st, policy: pc, sys: sys}, nil
}

// close shuts the store down, unmounting the driver's private mount.
func (s *storeHandle) close() error {
	s.policy.Destroy()
	_, err := s.store.Shutdown(true)
	return err
}

// importImage copies the layout image ref into the store as image id and
// gives it names (none: a dangling image).
func (s *storeHandle) importImage(ctx context.Context, layoutDir, ref, id string, names []string) error {
	src, err := layout.NewReference(layoutDir, ref)
	if err != nil {
		return err
	}
	var first reference.Named
	if len(names) > 0 {
		n, err := reference.ParseNormalizedNamed(names[0])
		if err != nil {
			return fmt.Errorf("name %q: %w", names[0], err)
		}
		first = reference.TagNameOnly(n)
	}
	dest, err := istorage.Transport.NewStoreReference(s.store, first, id)
	if err != nil {
		return err
	}
	if _, err := copy.Image(ctx, s.policy, dest, src, &copy.Options{
		ReportWriter:   io.Discard,
		SourceCtx:      s.sys,
		DestinationCtx: s.sys,
	}); err != nil {
		return fmt.Errorf("copying %s into the store: %w", ref, err)
	}
	if len(names) > 1 {
		var rest []string
		for _, n := range names[1:] {
			named, err := reference.ParseNormalizedNamed(n)
			if err != nil {
				return fmt.Errorf("name %q: %w", n, err)
			}
			rest = append(rest, reference.TagNameOnly(named).String())
		}
		if err := s.store.AddNames(id, rest); err != nil {
			return fmt.Errorf("naming %s: %w", id, err)
		}
	}
	return nil
}

// layerChain returns the store layer IDs of image id, base first.
func (s *storeHandle) layerChain(id string) ([]string, error) {
	img, err := s.store.Image(id)
	if err != nil {
		return nil, err
	}
	var chain []string
	for l := img.TopLayer; l != ""; {
		chain = append([]string{l}, chain...)
		layer, err := s.store.Layer(l)
		if err != nil {
			return nil, err
		}
		l = layer.Parent
	}
	return chain, nil
}

// tarEntry is one generated tar entry.
type tarEntry struct {
	name     string // relative, no leading "/"; directories without trailing "/"
	typ      byte   // tar.TypeReg, TypeDir, TypeSymlink
	mode     int64
	linkname string
	content  []byte
}

// writeEntries writes generated entries as a tar stream.
func writeEntries(w io.Writer, entries []tarEntry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.linkname,
			Mode:     e.mode,
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		switch e.typ {
		case tar.TypeDir:
			hdr.Name += "/"
		case tar.TypeReg:
			hdr.Size = int64(len(e.content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if len(e.content) > 0 {
			if _, err := tw.Write(e.content); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// tarTree writes the directory src into tw under the name prefix (no
// trailing "/"), in sorted order, keeping modes, owners, times, symlinks
// and hardlinks. Only the paths accepted by keep (relative to src, "" for
// src itself) are written; nil keeps everything.
func tarTree(tw *tar.Writer, src, prefix string, keep func(rel string, d fs.DirEntry) bool) error {
	inodes := map[[2]uint64]string{}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = ""
		}
		if keep != nil && !keep(rel, d) {
			if d.IsDir() && rel != "" {
				return filepath.SkipDir
			}
			if rel != "" {
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = strings.TrimPrefix(filepath.ToSlash(filepath.Join(prefix, rel)), "/")
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				key := [2]uint64{st.Dev, st.Ino}
				if first, ok := inodes[key]; ok {
					hdr.Typeflag = tar.TypeLink
					hdr.Linkname = first
					hdr.Size = 0
				} else {
					inodes[key] = hdr.Name
				}
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
}
