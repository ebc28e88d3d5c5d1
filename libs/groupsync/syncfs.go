package groupsync

import "os"

// FS flushes the filesystem that holds a directory: everything dirty on it, not
// only the broker's files, so its cost grows with other writers on that disk.
type FS struct {
	dir *os.File
}

// OpenFS opens dir (which must exist) for Sync.
func OpenFS(dir string) (*FS, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return &FS{dir: f}, nil
}

// Close releases the directory.
func (f *FS) Close() error { return f.dir.Close() }
