// Package datatypes is the data-type registry: for each data_type a JSON Schema
// that admits its patches, the consistency modes it may be written with (and the
// default), and the merge resolver of each field. It is loaded from a YAML file
// (config/datatypes.yaml; see docs/datatypes.md) by validation and merge, and
// reloaded when the file changes, without a restart.
package datatypes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"sigs.k8s.io/yaml"

	"github.com/fedsync/fedsync/libs/apierr"
	"github.com/fedsync/fedsync/libs/statedoc"
)

// Consistency modes.
const (
	Eventual = "eventual"
	Causal   = "causal"
	Strong   = "strong"
)

// Type is one data type.
type Type struct {
	Name        string
	Description string            `json:"description"`
	Consistency string            `json:"consistency"`
	Modes       []string          `json:"modes"`
	Schema      json.RawMessage   `json:"schema"`
	Fields      map[string]string `json:"fields"`
	// DefaultResolver merges fields not named in Fields (default "lww").
	DefaultResolver string `json:"default_resolver"`

	schema   *jsonschema.Schema
	required []string
}

type file struct {
	DataTypes map[string]*Type `json:"data_types"`
}

// Registry is one loaded version of the registry. It is immutable.
type Registry struct {
	types map[string]*Type
}

// Parse reads a registry from YAML (or JSON). knownResolver says which resolver
// names exist; nil accepts any.
func Parse(data []byte, knownResolver func(string) bool) (*Registry, error) {
	var f file
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("decode data types: %w", err)
	}
	if len(f.DataTypes) == 0 {
		return nil, fmt.Errorf("decode data types: no data_types")
	}
	r := &Registry{types: map[string]*Type{}}
	for name, t := range f.DataTypes {
		t.Name = name
		if err := t.prepare(knownResolver); err != nil {
			return nil, fmt.Errorf("data type %s: %w", name, err)
		}
		r.types[name] = t
	}
	return r, nil
}

// Load reads a registry file.
func Load(path string, knownResolver func(string) bool) (*Registry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read data types: %w", err)
	}
	r, err := Parse(data, knownResolver)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func (t *Type) prepare(knownResolver func(string) bool) error {
	if t.Consistency == "" {
		t.Consistency = Eventual
	}
	if len(t.Modes) == 0 {
		t.Modes = []string{t.Consistency}
	}
	for _, m := range append([]string{t.Consistency}, t.Modes...) {
		if m != Eventual && m != Causal && m != Strong {
			return fmt.Errorf("consistency %q: want eventual, causal or strong", m)
		}
	}
	if !slices.Contains(t.Modes, t.Consistency) {
		return fmt.Errorf("modes %v do not include the default consistency %s", t.Modes, t.Consistency)
	}
	if t.DefaultResolver == "" {
		t.DefaultResolver = "lww"
	}
	for field, res := range t.Fields {
		if knownResolver != nil && !knownResolver(res) {
			return fmt.Errorf("field %s: unknown resolver %q", field, res)
		}
	}
	if knownResolver != nil && !knownResolver(t.DefaultResolver) {
		return fmt.Errorf("unknown default_resolver %q", t.DefaultResolver)
	}
	if len(t.Schema) == 0 {
		t.Schema = json.RawMessage(`{"type":"object"}`)
	}
	// A patch is partial: the schema's top-level "required" applies to deletions
	// only, so it is taken out of the schema that validates patches.
	var doc map[string]any
	if err := json.Unmarshal(t.Schema, &doc); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	if req, ok := doc["required"].([]any); ok {
		for _, f := range req {
			if s, ok := f.(string); ok {
				t.required = append(t.required, s)
			}
		}
		delete(doc, "required")
	}
	c := jsonschema.NewCompiler()
	url := "mem://fedsync/datatypes/" + t.Name + ".json"
	if err := c.AddResource(url, doc); err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return fmt.Errorf("schema: %w", err)
	}
	t.schema = s
	return nil
}

// Lookup returns a data type.
func (r *Registry) Lookup(name string) (*Type, bool) {
	t, ok := r.types[name]
	return t, ok
}

// Names lists the data types, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.types))
	for n := range r.types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Type returns the data type of name, or an invalid_argument error naming the
// known ones.
func (r *Registry) Type(name string) (*Type, error) {
	t, ok := r.types[name]
	if !ok {
		return nil, apierr.New(apierr.InvalidArgument, "Field data_type %q is not a known data type (known: %s).", name, strings.Join(r.Names(), ", "))
	}
	return t, nil
}

// Mode returns the consistency a write uses: the requested one if the type
// allows it, the type's default when none is requested.
func (t *Type) Mode(requested string) (string, error) {
	if requested == "" {
		return t.Consistency, nil
	}
	if !slices.Contains(t.Modes, requested) {
		return "", apierr.New(apierr.InvalidArgument, "Field consistency %q is not allowed for data_type %s (allowed: %s).", requested, t.Name, strings.Join(t.Modes, ", "))
	}
	return requested, nil
}

// Resolver returns the resolver of a field.
func (t *Type) Resolver(field string) string {
	if r, ok := t.Fields[field]; ok {
		return r
	}
	return t.DefaultResolver
}

var printer = message.NewPrinter(language.English)

// finiteNumbers reports whether every number in v (decoded with json.Number)
// fits a finite IEEE-754 double, and else the path of the first that does not.
func finiteNumbers(v any, path string) (string, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		return path, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
	case map[string]any:
		for k, e := range x {
			if p, ok := finiteNumbers(e, path+"."+k); !ok {
				return p, false
			}
		}
	case []any:
		for i, e := range x {
			if p, ok := finiteNumbers(e, fmt.Sprintf("%s[%d]", path, i)); !ok {
				return p, false
			}
		}
	}
	return "", true
}

// ValidatePatch checks a patch against the type's schema. Deleting (null) a field
// the schema requires is refused; other deletions are not validated.
func (t *Type) ValidatePatch(patch statedoc.Object) error {
	inst := map[string]any{}
	for k, v := range patch {
		if statedoc.IsNull(v) {
			if slices.Contains(t.required, k) {
				return apierr.New(apierr.InvalidArgument, "Field %s is required by data_type %s and cannot be deleted.", k, t.Name)
			}
			continue
		}
		val, err := jsonschema.UnmarshalJSON(bytes.NewReader(v))
		if err != nil {
			return apierr.New(apierr.InvalidArgument, "Field %s is not valid JSON.", k)
		}
		if path, ok := finiteNumbers(val, k); !ok {
			return apierr.New(apierr.InvalidArgument, "Field %s holds a number outside the range of an IEEE-754 double (about ±1.8e308); fedsync stores numbers as doubles.", path).
				WithDetail("field", path)
		}
		inst[k] = val
	}
	err := t.schema.Validate(inst)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return apierr.New(apierr.InvalidArgument, "The patch does not match data_type %s: %v", t.Name, err)
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	field := "patch"
	if len(ve.InstanceLocation) > 0 {
		field = strings.Join(ve.InstanceLocation, ".")
	}
	return apierr.New(apierr.InvalidArgument, "Field %s does not match data_type %s: %s.", field, t.Name, ve.ErrorKind.LocalizedString(printer)).
		WithDetail("field", field)
}

// Watcher holds the current registry of a file and reloads it when the file
// changes. A file that fails to load keeps the previous registry in force.
type Watcher struct {
	path    string
	known   func(string) bool
	logger  log.Logger
	current atomic.Pointer[Registry]
	stamp   string
}

// NewWatcher loads path; it fails when the file is invalid at start-up.
func NewWatcher(path string, knownResolver func(string) bool, logger log.Logger) (*Watcher, error) {
	w := &Watcher{path: path, known: knownResolver, logger: logger}
	r, err := Load(path, knownResolver)
	if err != nil {
		return nil, err
	}
	w.current.Store(r)
	w.stamp = fileStamp(path)
	return w, nil
}

// Static returns a watcher that always holds r; for tests.
func Static(r *Registry) *Watcher {
	w := &Watcher{}
	w.current.Store(r)
	return w
}

// Get returns the registry in force.
func (w *Watcher) Get() *Registry { return w.current.Load() }

func fileStamp(path string) string {
	st, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", st.ModTime().UnixNano(), st.Size())
}

// Run reloads the file whenever its modification time or size changes, checking
// every interval, until ctx ends.
func (w *Watcher) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		stamp := fileStamp(w.path)
		if stamp == w.stamp || stamp == "" {
			continue
		}
		w.stamp = stamp
		r, err := Load(w.path, w.known)
		if err != nil {
			level.Error(w.logger).Log("msg", "data types not reloaded; the previous ones stay in force", "err", err)
			continue
		}
		w.current.Store(r)
		level.Info(w.logger).Log("msg", "data types reloaded", "path", w.path, "types", strings.Join(r.Names(), ","))
	}
}
