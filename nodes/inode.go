package nodes

import (
	"crypto/rand"
	"encoding/binary"
	"hash/fnv"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
)

// Inode numbers. The fixed directories have small reserved numbers; every
// other node of the read-side tree is numbered by a hash of its identity
// (kind + image ID, name, digest, layer ID…), so the same image, name or
// layer has the same number on every lookup, through every path (a prefix,
// a name's symlink) and across remounts. Never a counter.
const (
	// RootIno is the root directory's number; fs/ sets
	// fusefs.Options.RootStableAttr to it.
	RootIno = 1

	imagesIno  = 2
	namesIno   = 3
	digestsIno = 4
	layersIno  = 5
	dfIno      = 6

	// firstHashedIno: numbers below are reserved for fixed entries.
	firstHashedIno = uint64(1) << 16
	// hashedInoEnd: rootfs/ and diff/ entries are numbered from here
	// (RootfsInoBase, 2^62); go-fuse's automatic numbers start at 2^63.
	hashedInoEnd = uint64(1) << 62
)

// Inode kinds: the first part of the hashed identity. One per node type,
// so that an image ID and a layer ID that happen to be equal (they can be)
// still get different numbers.
const (
	kindImage       = "image"        // images/<id>/
	kindImageFile   = "image-file"   // images/<id>/<file>
	kindImageLayers = "image-layers" // images/<id>/layers/
	kindImageLayer  = "image-layer"  // images/<id>/layers/NNN
	kindInstances   = "instances"    // images/<id>/instances/
	kindInstance    = "instance"     // images/<id>/instances/<digest>
	kindNameDir     = "name-dir"     // names/<path…>/
	kindName        = "name"         // names/<path…>/<leaf>
	kindDigest      = "digest"       // digests/<digest>
	kindLayer       = "layer"        // layers/<id>/
	kindLayerFile   = "layer-file"   // layers/<id>/<file>
	kindLayerParent = "layer-parent" // layers/<id>/parent
	kindPlatforms   = "platforms"    // images/<id>/instances/platforms
	// kindContent numbers one content of a file that changes: the file's
	// own number (as above, or dfIno) and a hash of the bytes (blobfile.go).
	kindContent = "content"
)

// hashIno is the inode number of the node with this identity: FNV-1a 64
// of kind and parts (NUL-separated, so "a"+"bc" and "ab"+"c" differ),
// folded into [firstHashedIno, hashedInoEnd).
func hashIno(kind string, parts ...string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(kind))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
	}
	return firstHashedIno + h.Sum64()%(hashedInoEnd-firstHashedIno)
}

// stableAttr is the identity of a node of this mount: its file type, its
// number, and the server's generation.
func stableAttr(mode uint32, ino uint64) fusefs.StableAttr {
	return fusefs.StableAttr{Mode: mode, Ino: ino, Gen: generation}
}

// generation is the FUSE generation of every node this server process
// makes. The kernel puts a node's ID and generation in the file handles
// name_to_handle_at(2) gives out, and go-fuse numbers node IDs from 2 in
// every mount: with one generation for all mounts, a handle taken before
// a remount opens whichever file has its node ID now. A random one (32
// bits: the kernel keeps no more) makes such a handle ESTALE.
var generation = func() uint64 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails on Linux
	return uint64(binary.LittleEndian.Uint32(b[:]) | 1)
}()
