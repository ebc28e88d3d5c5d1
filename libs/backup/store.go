// Package backup keeps the cold tier of backups (seed 4.2, tier 3): a
// service's state exported as a snapshot, sealed with its at-rest keys,
// with a manifest carrying its SHA-256 digest, in a directory or in object
// storage through the S3 API.
package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Object is one stored object.
type Object struct {
	Name     string
	Size     int64
	Modified time.Time
}

// Store is where backups live: a directory, or a bucket through the S3 API.
type Store interface {
	// Put stores r's bytes under name, replacing what was there; a reader
	// never sees a partly written object.
	Put(ctx context.Context, name string, r io.Reader) error
	// Get opens name; ErrNotFound when there is none.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// List lists every object, by name.
	List(ctx context.Context) ([]Object, error)
	// Delete removes name (nothing when there is none).
	Delete(ctx context.Context, name string) error
	// String says where the store is, for logs and answers (no secrets).
	String() string
}

// ErrNotFound: no such object.
var ErrNotFound = errors.New("no such backup object")

// Dir is a Store in a local directory (the embedded default).
type Dir struct{ Path string }

func (d Dir) String() string { return d.Path }

// Put writes to a temporary file, syncs it and renames it into place.
func (d Dir) Put(_ context.Context, name string, r io.Reader) error {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d.Path, ".put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.Path, name)); err != nil {
		return err
	}
	dir, err := os.Open(d.Path)
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

func (d Dir) Get(_ context.Context, name string) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(d.Path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

func (d Dir) List(context.Context) ([]Object, error) {
	entries, err := os.ReadDir(d.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Object
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Object{Name: e.Name(), Size: info.Size(), Modified: info.ModTime()})
	}
	return out, nil
}

func (d Dir) Delete(_ context.Context, name string) error {
	err := os.Remove(filepath.Join(d.Path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// S3 is a Store in a bucket, under a prefix, through the S3 API (AWS S3,
// or any compatible server: MinIO, SeaweedFS, s3proxy, Ceph).
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
	where  string

	once    sync.Once
	bucketE error
}

// S3Options reach an S3 endpoint.
type S3Options struct {
	Endpoint  string // host[:port]
	Region    string
	Insecure  bool // plain HTTP (a server on loopback)
	AccessKey string
	SecretKey string
}

// NewS3 returns a Store for bucket/prefix at the endpoint.
func NewS3(bucket, prefix string, o S3Options) (*S3, error) {
	if bucket == "" {
		return nil, errors.New("backup: an s3:// target needs a bucket (s3://BUCKET/PREFIX)")
	}
	if o.Endpoint == "" {
		o.Endpoint = "s3.amazonaws.com"
	}
	var creds *credentials.Credentials
	if o.AccessKey != "" {
		creds = credentials.NewStaticV4(o.AccessKey, o.SecretKey, "")
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.IAM{}})
	}
	c, err := minio.New(o.Endpoint, &minio.Options{Creds: creds, Secure: !o.Insecure, Region: o.Region})
	if err != nil {
		return nil, fmt.Errorf("backup: S3 endpoint %s: %w", o.Endpoint, err)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	scheme := "https"
	if o.Insecure {
		scheme = "http"
	}
	return &S3{client: c, bucket: bucket, prefix: prefix, where: fmt.Sprintf("s3://%s/%s (%s://%s)", bucket, prefix, scheme, o.Endpoint)}, nil
}

func (s *S3) String() string { return s.where }

// ensureBucket creates the bucket when it does not exist (a development
// server; in production the bucket, its replication across regions and its
// lifecycle are the operator's).
func (s *S3) ensureBucket(ctx context.Context) error {
	s.once.Do(func() {
		ok, err := s.client.BucketExists(ctx, s.bucket)
		if err == nil && !ok {
			err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{})
		}
		s.bucketE = err
	})
	return s.bucketE
}

func (s *S3) Put(ctx context.Context, name string, r io.Reader) error {
	if err := s.ensureBucket(ctx); err != nil {
		s.once = sync.Once{}
		return fmt.Errorf("backup: bucket %s: %w", s.bucket, err)
	}
	_, err := s.client.PutObject(ctx, s.bucket, s.prefix+name, r, -1, minio.PutObjectOptions{ContentType: "application/octet-stream", PartSize: 16 << 20})
	return err
}

func (s *S3) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if _, err := s.client.StatObject(ctx, s.bucket, s.prefix+name, minio.StatObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" || minio.ToErrorResponse(err).StatusCode == 404 {
			return nil, ErrNotFound
		}
		return nil, err
	}
	return s.client.GetObject(ctx, s.bucket, s.prefix+name, minio.GetObjectOptions{})
}

func (s *S3) List(ctx context.Context) ([]Object, error) {
	var out []Object
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
		if o.Err != nil {
			if minio.ToErrorResponse(o.Err).Code == "NoSuchBucket" {
				return nil, nil
			}
			return nil, o.Err
		}
		name := strings.TrimPrefix(o.Key, s.prefix)
		if name == "" || strings.Contains(name, "/") {
			continue
		}
		out = append(out, Object{Name: name, Size: o.Size, Modified: o.LastModified})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *S3) Delete(ctx context.Context, name string) error {
	return s.client.RemoveObject(ctx, s.bucket, s.prefix+name, minio.RemoveObjectOptions{})
}

// Open returns the Store a target names: s3://BUCKET/PREFIX, file:///PATH or
// a path.
func Open(target string, o S3Options) (Store, error) {
	if strings.HasPrefix(target, "s3://") {
		u, err := url.Parse(target)
		if err != nil {
			return nil, fmt.Errorf("backup target %q: %w", target, err)
		}
		return NewS3(u.Host, u.Path, o)
	}
	target = strings.TrimPrefix(target, "file://")
	if target == "" {
		return nil, errors.New("backup: no target (a directory, file:///PATH or s3://BUCKET/PREFIX)")
	}
	if strings.Contains(target, "://") {
		return nil, fmt.Errorf("backup target %q: only s3:// and file:// (or a plain path) are known", target)
	}
	return Dir{Path: target}, nil
}
