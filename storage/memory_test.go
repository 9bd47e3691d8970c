package storage

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestTreapAgainstMap applies random sets and deletes to the treap and to a
// map, checking gets, ordered scans, and that old roots (snapshots) never
// change.
func TestTreapAgainstMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	model := map[string]string{}
	var root *treapNode
	type snap struct {
		root  *treapNode
		model map[string]string
	}
	var snaps []snap
	for i := range 5000 {
		k := fmt.Sprintf("k%03d", rng.IntN(400))
		if rng.IntN(3) == 0 {
			root = treapDelete(root, []byte(k))
			delete(model, k)
		} else {
			v := fmt.Sprint(i)
			root = treapInsert(root, []byte(k), []byte(v), rng.Uint64())
			model[k] = v
		}
		if i%500 == 0 {
			snaps = append(snaps, snap{root, maps.Clone(model)})
		}
	}
	snaps = append(snaps, snap{root, model})
	for i, s := range snaps {
		checkTreap(t, fmt.Sprintf("snapshot %d", i), s.root, s.model)
	}
}

func checkTreap(t *testing.T, name string, root *treapNode, model map[string]string) {
	t.Helper()
	v := memView{root: root}
	for k, want := range model {
		got, ok, _ := v.get([]byte(k))
		if !ok || string(got) != want {
			t.Fatalf("%s: get %s = %q, %v; want %q", name, k, got, ok, want)
		}
	}
	if _, ok, _ := v.get([]byte("absent")); ok {
		t.Fatalf("%s: found an absent key", name)
	}
	keys := slices.Sorted(maps.Keys(model))
	var scanned []string
	_ = v.scan([]byte("k"), []byte("k"), func(k, _ []byte) (bool, error) {
		scanned = append(scanned, string(k))
		return true, nil
	})
	if !slices.Equal(scanned, keys) {
		t.Fatalf("%s: scan gave %d keys in order %v…, want %d", name, len(scanned), scanned[:min(5, len(scanned))], len(keys))
	}
	// A scan from the middle of a prefix, stopped early.
	var from []string
	_ = v.scan([]byte("k1"), []byte("k150"), func(k, _ []byte) (bool, error) {
		from = append(from, string(k))
		return len(from) < 10, nil
	})
	var want []string
	for _, k := range keys {
		if k >= "k150" && k < "k2" && len(want) < 10 {
			want = append(want, k)
		}
	}
	if !slices.Equal(from, want) {
		t.Fatalf("%s: scan from k150 gave %v, want %v", name, from, want)
	}
	checkHeap(t, name, root)
}

// checkHeap checks the treap's invariants: search order and heap order.
func checkHeap(t *testing.T, name string, n *treapNode) {
	t.Helper()
	if n == nil {
		return
	}
	for _, c := range []*treapNode{n.left, n.right} {
		if c != nil && c.pri > n.pri {
			t.Fatalf("%s: child priority above parent's", name)
		}
	}
	if n.left != nil && bytes.Compare(n.left.key, n.key) >= 0 || n.right != nil && bytes.Compare(n.right.key, n.key) <= 0 {
		t.Fatalf("%s: search order broken at %s", name, n.key)
	}
	checkHeap(t, name, n.left)
	checkHeap(t, name, n.right)
}
