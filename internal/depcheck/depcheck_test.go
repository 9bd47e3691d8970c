package depcheck

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/ternhq/tern"

// rules lists, for each top-level package directory, the import path
// prefixes its non-test files may import besides the standard library and
// its own subpackages. Directories without a rule (cmd, internal) may import
// anything.
var rules = map[string][]string{
	"wire":    {"google.golang.org/protobuf/"},
	"core":    {},
	"storage": {module + "/core", "github.com/dgraph-io/badger/v4"},
	"push":    {module + "/core", "github.com/sideshow/apns2", "firebase.google.com/go/v4", "google.golang.org/api/", "golang.org/x/oauth2", "golang.org/x/net/http2"},
	"edge":    {module + "/core", module + "/wire", "github.com/quic-go/quic-go"},
	"client":  {module + "/wire", "github.com/quic-go/quic-go"},
	"bench":   {module + "/client", module + "/wire", module + "/internal/netsim", module + "/bench/"},
}

func isStdlib(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}

func allowed(top, imp string) bool {
	if isStdlib(imp) || imp == module+"/"+top || strings.HasPrefix(imp, module+"/"+top+"/") {
		return true
	}
	for _, p := range rules[top] {
		if imp == strings.TrimSuffix(p, "/") || strings.HasPrefix(imp, strings.TrimSuffix(p, "/")+"/") {
			return true
		}
	}
	return false
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]int{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "peers") {
			// bench/peers is a separate module with its own go.mod.
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, path)
		top, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
		if _, ok := rules[top]; !ok {
			return nil
		}
		pkg, err := build.Default.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		checked[top]++
		for _, imp := range pkg.Imports {
			if !allowed(top, imp) {
				t.Errorf("%s imports %s: %s may import only the standard library and %v", filepath.ToSlash(rel), imp, top, rules[top])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The rules must have bitten on the packages that exist, or this test
	// checks nothing.
	for _, top := range []string{"wire", "core", "storage", "edge", "client"} {
		if checked[top] == 0 {
			t.Errorf("no Go package found under %s/", top)
		}
	}
}

// TestRulesCatchViolations makes sure the checker itself can fail.
func TestRulesCatchViolations(t *testing.T) {
	bad := []struct{ top, imp string }{
		{"core", module + "/wire"},
		{"core", "github.com/quic-go/quic-go"},
		{"core", "github.com/dgraph-io/badger/v4"},
		{"wire", module + "/core"},
		{"client", module + "/core"},
		{"client", module + "/edge"},
		{"edge", module + "/storage"},
		{"bench", module + "/edge"},
		{"storage", module + "/wire"},
	}
	for _, b := range bad {
		if allowed(b.top, b.imp) {
			t.Errorf("%s importing %s is allowed, want refused", b.top, b.imp)
		}
	}
	good := []struct{ top, imp string }{
		{"core", "context"},
		{"wire", "google.golang.org/protobuf/proto"},
		{"edge", "github.com/quic-go/quic-go"},
		{"storage", "github.com/dgraph-io/badger/v4/options"},
		{"storage", module + "/storage/internal"},
	}
	for _, g := range good {
		if !allowed(g.top, g.imp) {
			t.Errorf("%s importing %s is refused, want allowed", g.top, g.imp)
		}
	}
	if slices.Contains(rules["core"], "") {
		t.Error("core must have no allowances")
	}
}
