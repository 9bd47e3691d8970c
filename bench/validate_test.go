package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestBodyRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	st := Stamp{Run: 0xdeadbeef, Sender: 3, Receiver: 70000, N: 1 << 40, At: at}
	for _, size := range []int{0, MinBodySize, 1000} {
		b := AppendBody(nil, st, size)
		if len(b) < size {
			t.Fatalf("size %d: body of %d bytes", size, len(b))
		}
		got, err := DecodeBody(b)
		if err != nil || got.Run != st.Run || got.Sender != st.Sender || got.Receiver != st.Receiver || got.N != st.N || !got.At.Equal(at) {
			t.Fatalf("size %d: decoded %+v, %v; want %+v", size, got, err, st)
		}
	}
	full := AppendBody(nil, st, 0)
	for i := range full {
		if _, err := DecodeBody(full[:i]); err == nil {
			t.Fatalf("prefix of %d bytes decoded", i)
		}
	}
	if _, err := DecodeBody([]byte("hello")); err == nil {
		t.Fatal("a foreign body decoded")
	}
}

func FuzzDecodeBody(f *testing.F) {
	f.Add(AppendBody(nil, Stamp{Run: 1, Sender: 2, Receiver: 3, N: 4, At: time.Unix(5, 0)}, 100))
	f.Add([]byte("TB\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := DecodeBody(b)
		if err != nil {
			return
		}
		again, err := DecodeBody(AppendBody(nil, st, 0))
		if err != nil || again != st {
			t.Fatalf("re-encoding %+v gave %+v, %v", st, again, err)
		}
	})
}

// scripted builds a history by hand: sends are acknowledged as listed,
// then each receiver's sessions deliver the listed (sender, n, seq).
type scriptDelivery struct {
	session int // 1, 2...: a new session starts when this goes up
	sender  int
	n       uint64
	seq     uint64
}

func scripted(t *testing.T, acked [][]uint64, deliveries []scriptDelivery) *Validation {
	t.Helper()
	h := NewHistory(42, []string{"s0", "s1"}, []string{"r0"})
	for s, ns := range acked {
		for range ns {
			n := h.Issue(s, 0)
			h.Done(s, 0, n, nil)
		}
	}
	var deliver func(Delivery)
	session := 0
	for _, d := range deliveries {
		for session < d.session {
			deliver = h.Session(0)
			session++
		}
		deliver(Delivery{Seq: d.seq, Body: AppendBody(nil, Stamp{Run: 42, Sender: d.sender, Receiver: 0, N: d.n, At: time.Now()}, 0)})
	}
	return h.Validate()
}

// TestValidatorClassifies checks that each kind of misbehaviour is caught
// and named by exactly the guarantee it breaks.
func TestValidatorClassifies(t *testing.T) {
	two := [][]uint64{{1, 2, 3}, {1, 2}}
	for _, tc := range []struct {
		name string
		d    []scriptDelivery
		want map[Guarantee]int
	}{
		{"clean", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 2, 3}, {1, 1, 2, 4}, {1, 0, 3, 5}}, nil},
		{"clean across sessions", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {2, 0, 2, 3}, {2, 1, 2, 4}, {3, 0, 3, 5}}, nil},
		{"lost", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 3, 3}, {1, 1, 2, 4}}, map[Guarantee]int{Reliable: 1}},
		{"duplicated", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 2, 3}, {1, 0, 2, 4}, {1, 1, 2, 5}, {1, 0, 3, 6}}, map[Guarantee]int{Unique: 1}},
		{"reordered", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 3, 3}, {1, 0, 2, 4}, {1, 1, 2, 5}}, map[Guarantee]int{Ordered: 1}},
		{"replayed after reconnect", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 2, 3}, {2, 0, 2, 3}, {2, 1, 2, 4}, {2, 0, 3, 5}}, map[Guarantee]int{Resumable: 1}},
		{"skipped on reconnect", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {2, 1, 2, 4}, {2, 0, 3, 5}}, map[Guarantee]int{Resumable: 1, Reliable: 1}},
		{"seq gap", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 2, 4}, {1, 1, 2, 5}, {1, 0, 3, 6}}, map[Guarantee]int{Reliable: 1}},
		{"seq twice", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 1}, {1, 0, 2, 2}, {1, 1, 2, 3}, {1, 0, 3, 4}}, map[Guarantee]int{Unique: 1}},
		{"never sent", []scriptDelivery{{1, 0, 1, 1}, {1, 1, 1, 2}, {1, 0, 2, 3}, {1, 1, 2, 4}, {1, 0, 3, 5}, {1, 0, 9, 6}}, map[Guarantee]int{Reliable: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := scripted(t, two, tc.d)
			if len(v.Counts) != len(tc.want) {
				t.Fatalf("counts %v, want %v; violations %v", v.Counts, tc.want, v.Violations)
			}
			for g, n := range tc.want {
				if v.Counts[g] != n {
					t.Fatalf("counts %v, want %v; violations %v", v.Counts, tc.want, v.Violations)
				}
			}
			if v.OK() != (tc.want == nil) {
				t.Fatalf("OK() = %v with counts %v", v.OK(), v.Counts)
			}
		})
	}
}

func TestValidatorForeignBody(t *testing.T) {
	h := NewHistory(7, []string{"s"}, []string{"r"})
	deliver := h.Session(0)
	deliver(Delivery{Body: []byte("not ours")})
	deliver(Delivery{Body: AppendBody(nil, Stamp{Run: 8, N: 1}, 0)})
	v := h.Validate()
	if v.Counts[Reliable] != 2 || len(v.Counts) != 1 {
		t.Fatalf("counts %v, want 2 reliable; %v", v.Counts, v.Violations)
	}
}

// TestScenariosCatchMisbehaviour runs real scenarios against a target
// that loses, duplicates, reorders or replays one message on purpose: each
// run must fail, loudly, on the right guarantee; the well-behaved target
// must pass.
func TestScenariosCatchMisbehaviour(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fault
		storm bool
		want  Guarantee
	}{
		{"none", faultNone, false, ""},
		{"lost", faultLose, false, Reliable},
		{"duplicated", faultDup, false, Unique},
		{"reordered", faultReorder, false, Ordered},
		{"seq twice", faultSeqDup, false, Unique},
		{"replayed on reconnect", faultReplay, true, Resumable},
		{"none across reconnects", faultNone, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ft := newFake(tc.fault)
			var res *Result
			var err error
			if tc.storm {
				res, err = Storm(ctx, ft, StormConfig{Clients: 6, Senders: 2, Timeout: Duration(5 * time.Second)})
			} else {
				res, err = Throughput(ctx, ft, ThroughputConfig{Senders: 2, Receivers: 2, Window: 2, Messages: 200, Drain: Duration(time.Second)})
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if res.Failed() {
					t.Fatalf("clean target failed: %s %v", res.Validation.Summary(), res.Validation.Violations)
				}
				return
			}
			if !res.Failed() || res.Validation.Counts[tc.want] == 0 {
				t.Fatalf("want a %s violation, got %s %v", tc.want, res.Validation.Summary(), res.Validation.Violations)
			}
			var out bytes.Buffer
			WriteText(&out, []*Result{res})
			if !strings.Contains(out.String(), "FAILED") || !strings.Contains(out.String(), string(tc.want)+":") {
				t.Fatalf("the report does not say it failed:\n%s", out.String())
			}
		})
	}
}
