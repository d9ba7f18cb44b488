package nodes

import fusefs "github.com/hanwen/go-fuse/v2/fs"

// The FUSE operations each node kind of the read-side tree answers.
// Everything it does not list is refused with EROFS (readonly.go).
var (
	_ = (fusefs.NodeOnAdder)((*rootDir)(nil))
	_ = (fusefs.NodeLookuper)((*rootDir)(nil))
	_ = (fusefs.NodeReaddirer)((*rootDir)(nil))

	_ = (fusefs.NodeLookuper)((*imagesDir)(nil))
	_ = (fusefs.NodeReaddirer)((*imagesDir)(nil))
	_ = (fusefs.NodeLookuper)((*imageDir)(nil))
	_ = (fusefs.NodeReaddirer)((*imageDir)(nil))
	_ = (fusefs.NodeLookuper)((*imageLayersDir)(nil))
	_ = (fusefs.NodeReaddirer)((*imageLayersDir)(nil))
	_ = (fusefs.NodeLookuper)((*instancesDir)(nil))
	_ = (fusefs.NodeReaddirer)((*instancesDir)(nil))
	_ = (fusefs.NodeLookuper)((*namesDir)(nil))
	_ = (fusefs.NodeReaddirer)((*namesDir)(nil))
	_ = (fusefs.NodeLookuper)((*digestsDir)(nil))
	_ = (fusefs.NodeReaddirer)((*digestsDir)(nil))
	_ = (fusefs.NodeLookuper)((*layersDir)(nil))
	_ = (fusefs.NodeReaddirer)((*layersDir)(nil))
	_ = (fusefs.NodeLookuper)((*layerDir)(nil))
	_ = (fusefs.NodeReaddirer)((*layerDir)(nil))

	_ = (fusefs.NodeReader)((*blobFile)(nil))
	_ = (fusefs.NodeReadlinker)((*symlink)(nil))

	// Every node: attributes from the current index, changes refused.
	_ = (fusefs.NodeGetattrer)((*node)(nil))
	_ = (fusefs.NodeAccesser)((*node)(nil))
	_ = (fusefs.NodeSetattrer)((*node)(nil))
	_ = (fusefs.NodeSetxattrer)((*node)(nil))
	_ = (fusefs.NodeRemovexattrer)((*node)(nil))
	_ = (fusefs.NodeWritever)((*node)(nil))
	_ = (fusefs.NodeAllocater)((*node)(nil))

	// Every directory refuses new and removed entries.
	_ = (fusefs.NodeCreater)((*dirNode)(nil))
	_ = (fusefs.NodeTmpfiler)((*dirNode)(nil))
	_ = (fusefs.NodeMkdirer)((*dirNode)(nil))
	_ = (fusefs.NodeMknoder)((*dirNode)(nil))
	_ = (fusefs.NodeLinker)((*dirNode)(nil))
	_ = (fusefs.NodeSymlinker)((*dirNode)(nil))
	_ = (fusefs.NodeUnlinker)((*dirNode)(nil))
	_ = (fusefs.NodeRmdirer)((*dirNode)(nil))
	_ = (fusefs.NodeRenamer)((*dirNode)(nil))

	_ treeNode = (*rootDir)(nil)
	_ treeNode = (*imagesDir)(nil)
	_ treeNode = (*imageDir)(nil)
	_ treeNode = (*imageLayersDir)(nil)
	_ treeNode = (*instancesDir)(nil)
	_ treeNode = (*namesDir)(nil)
	_ treeNode = (*digestsDir)(nil)
	_ treeNode = (*layersDir)(nil)
	_ treeNode = (*layerDir)(nil)
	_ treeNode = (*blobFile)(nil)
	_ treeNode = (*symlink)(nil)
)
