package service

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hindsight-cdp/hindsight/store/storetest"
)

// The instant routes without vSphere: a recorded instant no process serves
// is listed as orphaned, ending it without a connection says what is
// needed, unknown names and malformed requests get their kinds.
func TestInstantRoutes(t *testing.T) {
	r, dir := storetest.Repo(t)
	s, err := New(r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := s.handler()
	call := func(method, path, body string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}
	if code, body := call("GET", "/v1/instants", ""); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("empty list: %d %s", code, body)
	}
	if code, body := call("DELETE", "/v1/instants/nope", ""); code != http.StatusNotFound || !strings.Contains(body, `"not_found"`) {
		t.Fatalf("unknown instant: %d %s", code, body)
	}
	rec := filepath.Join(dir, "run", "vsphere-instant")
	os.MkdirAll(rec, 0o700)
	os.WriteFile(filepath.Join(rec, "left.json"), []byte(`{"vm":"left","pid":1}`), 0o600)
	code, body := call("GET", "/v1/instants", "")
	var list []InstantStatus
	if json.Unmarshal([]byte(body), &list); code != 200 || len(list) != 1 || list[0].VM != "left" || list[0].State != InstantOrphaned {
		t.Fatalf("orphan: %d %s", code, body)
	}
	if code, body := call("DELETE", "/v1/instants/left?keep=false", ""); code != http.StatusBadRequest || !strings.Contains(body, "vSphere connection") {
		t.Fatalf("orphan without a connection: %d %s", code, body)
	}
	if code, body := call("DELETE", "/v1/instants/left?keep=maybe", ""); code != http.StatusBadRequest || !strings.Contains(body, "keep") {
		t.Fatalf("bad keep: %d %s", code, body)
	}
	for _, b := range []string{`{"name":"x","source":"web","vsphere":{"url":"u","pasword":"p"}}`, `{"name":"x"`, `{"name":"../x","source":"web"}`} {
		if code, body := call("POST", "/v1/instants", b); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", b, code, body)
		}
	}
	if code, body := call("POST", "/v1/instants", `{"name":"x","source":"nope","vsphere":{"url":"https://127.0.0.1:1/sdk"}}`); code != http.StatusNotFound || !strings.Contains(body, "unknown_disk") {
		t.Errorf("unknown source: %d %s", code, body)
	}
	if len(s.Instants()) != 1 {
		t.Errorf("a refused start left an instant: %+v", s.Instants())
	}
}
