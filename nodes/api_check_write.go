package nodes

import fusefs "github.com/hanwen/go-fuse/v2/fs"

// The FUSE operations the write side adds to the tree (nodes/*_write.go).
var (
	_ = (fusefs.NodeSymlinker)((*namesDir)(nil))
	_ = (fusefs.NodeUnlinker)((*namesDir)(nil))
	_ = (fusefs.NodeMkdirer)((*namesDir)(nil))
	_ = (fusefs.NodeRmdirer)((*namesDir)(nil))
	_ = (fusefs.NodeRenamer)((*namesDir)(nil))
	_ = (fusefs.NodeOnAdder)((*namesDir)(nil))
	_ = (fusefs.NodeRmdirer)((*imagesDir)(nil))
	_ = (fusefs.NodeUnlinker)((*digestsDir)(nil))
	_ = (fusefs.NodeReadlinker)((*nameLink)(nil))

	_ treeNode = (*nameLink)(nil)
)
