package service

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// decodeTargets are the request types of the protocol, each with its
// normalize when it has one.
var decodeTargets = []struct {
	name      string
	new       func() any
	normalize func(any) error
}{
	{"ProtectSpec", func() any { return &ProtectSpec{} }, func(v any) error { return v.(*ProtectSpec).normalize() }},
	{"CloneSpec", func() any { return &CloneSpec{} }, func(v any) error { return v.(*CloneSpec).normalize() }},
	{"HeadRequest", func() any { return &HeadRequest{} }, nil},
	{"MarkRequest", func() any { return &MarkRequest{} }, nil},
	{"DiskRequest", func() any { return &DiskRequest{} }, nil},
	{"GroupRequest", func() any { return &GroupRequest{} }, nil},
	{"JoinRequest", func() any { return &JoinRequest{} }, nil},
	{"ImportRequest", func() any { return &ImportRequest{} }, nil},
}

// FuzzDecode: decoding any body into any request type, then normalizing
// it, never panics; every failure is one of the protocol's kinds; a spec
// that normalizes once is unchanged by normalizing again.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"targets":["web"],"tap":{"mount":"/run/hs/web"}}`,
		`{"name":"db","targets":["db1","db2"],"nbd":{"listen":"unix:/run/hs/db.sock"}}`,
		`{"targets":["web"],"nbd":{"listen":"127.0.0.1:10809","insecure_local":true}}`,
		`{"targets":["web"],"tap":{"mount":"/a/../b/","allow_other":true,"gid":100}}`,
		`{"name":"t","source":"web","at":"-10m","mount":"/run/hs/t"}`,
		`{"target":"web"}`,
		`{"target":"db","bookmark":{"name":"b","time":"2026-01-02T03:04:05Z","kind":"user","files":{"a":"b"}}}`,
		`{"name":"web","size":1048576,"block_size":4096,"group":"g"}`,
		`{"name":"g","disks":["a","b"]}`,
		`{"disk":"a"}`,
		`{"disk":"a","path":"/x.img","at":"2026-01-02T03:04:05Z"}`,
		`{"targets":["a"]} {}`, `{"nope":1}`, `[]`, `null`, `"x"`, ``, `{"targets":[1]}`,
		`{"name":"\u0000"}`, `{"targets":["a"],"tap":{"mount":"/"},"nbd":{"listen":"x"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tg := range decodeTargets {
			v := tg.new()
			err := decode(bytes.NewReader(body), v)
			if err != nil {
				if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("%s: decode error of no kind: %v", tg.name, err)
				}
				if kindOf(err) == "" || statusOf(kindOf(err))/100 != 4 {
					t.Fatalf("%s: %v answers %d", tg.name, err, statusOf(kindOf(err)))
				}
				continue
			}
			if tg.normalize == nil {
				continue
			}
			if err := tg.normalize(v); err != nil {
				if !errors.Is(err, ErrBadSpec) || statusOf(kindOf(err)) != http.StatusBadRequest {
					t.Fatalf("%s: normalize error not ErrBadSpec: %v", tg.name, err)
				}
				continue
			}
			once, _ := json.Marshal(v)
			if err := tg.normalize(v); err != nil {
				t.Fatalf("%s: normalized %s, then refused: %v", tg.name, once, err)
			}
			twice, _ := json.Marshal(v)
			if !bytes.Equal(once, twice) {
				t.Fatalf("%s: normalize is not idempotent: %s then %s", tg.name, once, twice)
			}
		}
	})
}

// frontEndRoutes start front ends or open files named in the body: the
// handler fuzz sends them only an empty object, which never passes their
// checks, so that a fuzzed body can never mount anything or read a file.
var frontEndRoutes = map[string]bool{
	"POST /v1/protections": true,
	"POST /v1/clones":      true,
	"POST /v1/imports":     true,
}

// FuzzHandler: any method, path and body through the service's routes is
// answered with JSON, and a failure with its kind's status; nothing is
// ever started.
func FuzzHandler(f *testing.F) {
	for _, c := range [][3]string{
		{"GET", "/v1/service", ""}, {"GET", "/v1/protections", ""}, {"POST", "/v1/protections", `{}`},
		{"DELETE", "/v1/protections/web", ""}, {"POST", "/v1/clones", `{}`}, {"DELETE", "/v1/clones/c?keep=1", ""},
		{"POST", "/v1/head", `{"target":"web"}`}, {"POST", "/v1/bookmarks", `{"target":"web","bookmark":{"name":"b"}}`},
		{"POST", "/v1/disks", `{"name":"web","size":1048576,"block_size":4096}`}, {"POST", "/v1/disks", `{"name":"x","size":-1,"block_size":3}`},
		{"POST", "/v1/groups", `{"name":"g","disks":["web"]}`}, {"POST", "/v1/groups/g/disks", `{"disk":"web"}`},
		{"POST", "/v1/imports", `{}`}, {"PUT", "/v1/protections", ""}, {"GET", "/v1//x/../service", ""}, {"PATCH", "/", "x"},
	} {
		f.Add(c[0], c[1], []byte(c[2]))
	}
	s, _ := newTestService(f, Options{})
	h := s.handler()
	mux := h.(*http.ServeMux)
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "http://x"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		if _, pattern := mux.Handler(req); frontEndRoutes[pattern] {
			req.Body, req.ContentLength = http.NoBody, 0
			req, _ = http.NewRequest(method, "http://x"+path, strings.NewReader(`{}`))
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := s.Protections(); len(got) != 0 {
			t.Fatalf("%s %s %q started %+v", method, path, body, got)
		}
		if rec.Code/100 == 3 { // the mux's redirect to a clean path
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %s: content type %q", method, path, ct)
		}
		if rec.Code == http.StatusOK {
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %s: 200 with %q", method, path, rec.Body.String())
			}
			return
		}
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error == "" {
			t.Fatalf("%s %s: %d with %q, not an error body", method, path, rec.Code, rec.Body.String())
		}
		if rec.Code != statusOf(eb.Kind) {
			t.Fatalf("%s %s: %d for kind %q (want %d): %s", method, path, rec.Code, eb.Kind, statusOf(eb.Kind), eb.Error)
		}
	})
}
