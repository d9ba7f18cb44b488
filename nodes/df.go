package nodes

import "github.com/imagefs/imagefs/storageview"

// newDFFile is the file df: the store's disk use by images, computed by
// the store (storageview.View.DF), as it is now.
func newDFFile(t *tree) *blobFile {
	return newBlobFile(t, dfIno, "/df", blobSource{
		state: func(ix *storageview.Index) (blobState, bool) {
			return blobState{mtime: t.fixedTime(ix)}, true
		},
		read: t.store.DF,
	})
}
