// Package xattrs names the extended attributes imagefs answers itself.
//
// Every imagefs attribute lives under the "user.imagefs." namespace. They
// are answered by getxattr but never listed by listxattr, so copying a tree
// out of the mount (cp -a, rsync -X, tar --xattrs) does not carry them
// along. docs/LAYOUT.md describes each one.
package xattrs

import "strings"

// Prefix starts the name of every attribute imagefs answers itself.
const Prefix = "user.imagefs."

// IsImagefs reports whether name is in imagefs's own namespace (and so is
// never taken from, nor written to, the layers).
func IsImagefs(name string) bool { return strings.HasPrefix(name, Prefix) }
