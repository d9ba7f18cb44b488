package storageview

// ExpireCheck makes the next Index call check the store (as if the check
// interval had passed), for tests timing the check.
func ExpireCheck(v *View) { v.expireCheck() }
