package groupsync

import "golang.org/x/sys/unix"

// Sync writes every dirty page and inode of the filesystem holding the
// directory to disk (syncfs(2)) and reports writeback errors.
func (f *FS) Sync() error {
	raw, err := f.dir.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	return serr
}
