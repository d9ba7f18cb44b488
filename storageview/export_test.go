package storageview

// ExpireCheck makes the next Index call check the store (as if the check
// interval had passed).
func ExpireCheck(v *View) { v.expireCheck() }

// StoreReads is how many times v has read the store's last-writer tokens,
// and its records.
func StoreReads(v *View) (checks, rebuilds int) {
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	return v.watch.checks, v.rebuilds
}
