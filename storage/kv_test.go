package storage

import (
	"fmt"
	"slices"
	"testing"
)

// mapGetter is a kvGetter over a map.
type mapGetter map[string]string

func (m mapGetter) get(key []byte) ([]byte, bool, error) {
	v, ok := m[string(key)]
	if !ok {
		return nil, false, nil
	}
	return []byte(v), true, nil
}

// recordTxn records what an overlay flushes into it.
type recordTxn struct{ ops []string }

func (r *recordTxn) set(key, value []byte, _ uint64) error {
	r.ops = append(r.ops, "set "+string(key)+"="+string(value))
	return nil
}

func (r *recordTxn) delete(key []byte) error {
	r.ops = append(r.ops, "del "+string(key))
	return nil
}

func (r *recordTxn) commit(func(error), func(error)) { panic("not used") }
func (r *recordTxn) discard()                        {}

// TestOverlay checks reads through an overlay and what it flushes and
// merges, with few writes (scanned) and with many (indexed in a map).
func TestOverlay(t *testing.T) {
	for _, extra := range []int{0, overlayScan} {
		t.Run(fmt.Sprint(extra, " extra writes"), func(t *testing.T) {
			o := newOverlay(mapGetter{"a": "base-a", "b": "base-b", "c": "base-c"})
			_ = o.set([]byte("a"), []byte("1"), 0)
			_ = o.delete([]byte("b"))
			_ = o.set([]byte("x"), []byte("1"), 0)
			for i := range extra {
				_ = o.set(fmt.Appendf(nil, "k%02d", i), []byte("v"), 0)
			}
			_ = o.set([]byte("a"), []byte("2"), 0) // overwrites a
			_ = o.set([]byte("b"), []byte("3"), 0) // revives b
			_ = o.delete([]byte("x"))              // deletes x
			if (o.latest != nil) != (len(o.writes) > overlayScan) {
				t.Fatalf("%d writes, indexed %v", len(o.writes), o.latest != nil)
			}
			for key, want := range map[string]string{"a": "2", "b": "3", "c": "base-c", "x": "", "nope": ""} {
				v, ok, err := o.get([]byte(key))
				if err != nil || string(v) != want || ok != (want != "") {
					t.Errorf("get(%s) = %q, %v, %v; want %q", key, v, ok, err, want)
				}
			}
			var txn recordTxn
			if err := o.flush(&txn); err != nil {
				t.Fatal(err)
			}
			want := []string{}
			for i := range extra {
				want = append(want, fmt.Sprintf("set k%02d=v", i))
			}
			want = append(want, "set a=2", "set b=3", "del x")
			if !slices.Equal(txn.ops, want) {
				t.Errorf("flushed %v, want %v", txn.ops, want)
			}
			l := newLayer()
			l.add(o)
			if len(l.writes) != 3+extra || string(l.writes["a"].value) != "2" || !l.writes["x"].deleted || l.writes["b"].deleted {
				t.Errorf("layer %v", l.writes)
			}
		})
	}
}
