//go:build !linux

package groupsync

import "errors"

// Sync is only implemented on Linux (syncfs(2)); elsewhere it fails, so that no
// produce response is acknowledged without a flush.
func (f *FS) Sync() error { return errors.New("groupsync: syncfs is only available on Linux") }
