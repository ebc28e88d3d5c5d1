// Package httpjson reads and writes the JSON bodies of fedsync's REST API with the
// contract's errors: a body over the limit is 413 too_large, malformed JSON or a
// field of the wrong type is 400 invalid_argument naming the field.
package httpjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/fedsync/fedsync/libs/apierr"
)

// DefaultMaxBody is the contract's default body limit, 1 MiB.
const DefaultMaxBody = 1 << 20

// Decode reads r's body, at most maxBytes, into dst. Unknown fields are
// rejected so that a misspelled field is reported instead of silently ignored.
// The writer is not used; it keeps the signature of handlers' other helpers.
//
// A body declared as something other than JSON (Content-Type other than
// application/json or application/*+json, or a charset other than UTF-8) is
// 415 with code invalid_argument; a body without a Content-Type is read as
// JSON.
func Decode(_ http.ResponseWriter, r *http.Request, maxBytes int64, dst any) error {
	if err := CheckContentType(r); err != nil {
		return err
	}
	if r.ContentLength > maxBytes {
		return apierr.New(apierr.TooLarge, "The request body is %d bytes; the limit is %d bytes.", r.ContentLength, maxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err == nil && int64(len(body)) > maxBytes {
		return apierr.New(apierr.TooLarge, "The request body is larger than the limit of %d bytes.", maxBytes)
	}
	if err != nil {
		return apierr.New(apierr.InvalidArgument, "The request body could not be read: %v.", err)
	}
	return Unmarshal(body, dst)
}

// CheckContentType refuses a request body declared as something other than
// JSON with 415 (code invalid_argument, details.reason unsupported_media_type).
func CheckContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || (strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))) {
		if cs, ok := params["charset"]; !ok || strings.EqualFold(cs, "utf-8") {
			return nil
		}
	}
	return apierr.New(apierr.InvalidArgument, "The request body must be JSON (Content-Type: application/json), not %q.", ct).
		WithDetail("reason", "unsupported_media_type").WithHTTPStatus(http.StatusUnsupportedMediaType)
}

// Unmarshal decodes one JSON value strictly, with errors that name the field:
// the body must be valid UTF-8, and the names of a struct's fields must match
// exactly (encoding/json alone would take "Id" for "id").
func Unmarshal(body []byte, dst any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		return apierr.New(apierr.InvalidArgument, "The request body is empty; a JSON object is required.")
	}
	if !utf8.Valid(body) {
		at := 0
		for at < len(body) {
			r, n := utf8.DecodeRune(body[at:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			at += n
		}
		return apierr.New(apierr.InvalidArgument, "The request body is not valid UTF-8 (at byte %d).", at).WithDetail("reason", "invalid_utf8")
	}
	if err := exactNames(body, dst); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return apierr.New(apierr.InvalidArgument, "%s", describe(err)).WithDetail("reason", "malformed_json")
	}
	if dec.More() {
		return apierr.New(apierr.InvalidArgument, "The request body has data after its JSON value.")
	}
	return nil
}

// exactNames refuses a top-level member whose name matches a field of dst's
// struct only when case is ignored.
func exactNames(body []byte, dst any) error {
	t := reflect.TypeOf(dst)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	names := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" {
			name = t.Field(i).Name
		}
		if name != "-" {
			names[name] = true
		}
	}
	// Only a name with an upper-case or non-ASCII letter can fold onto a
	// field's (lower-case) name: most bodies skip the second parse.
	if !bytes.ContainsFunc(body, func(r rune) bool { return (r >= 'A' && r <= 'Z') || r >= utf8.RuneSelf }) {
		return nil
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(body, &members) != nil {
		return nil // not an object: the decoder reports it
	}
	for k := range members {
		if names[k] {
			continue
		}
		for n := range names {
			if strings.EqualFold(n, k) {
				return apierr.New(apierr.InvalidArgument, "Field %s is not part of the request; field names are case-sensitive (did you mean %s?).", k, n).
					WithDetail("field", k)
			}
		}
	}
	return nil
}

func describe(err error) string {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return fmt.Sprintf("The request body must be a JSON object, not a JSON %s.", typeErr.Value)
		}
		return fmt.Sprintf("Field %s must be a JSON %s, not a JSON %s.", field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("The request body is not valid JSON (at byte %d): %v.", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Sprintf("Field %s is not part of the request.", strings.TrimPrefix(err.Error(), "json: unknown field "))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "The request body is truncated JSON."
	}
	return fmt.Sprintf("The request body is not valid JSON: %v.", err)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "number"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	}
	return "object"
}

// Write writes v as JSON with status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// NotFound answers routes the API does not have with 404 not_found.
func NotFound(w http.ResponseWriter, r *http.Request) {
	apierr.WriteHTTP(w, apierr.New(apierr.NotFound, "No route %s %s.", r.Method, r.URL.Path))
}
