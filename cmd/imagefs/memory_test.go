package main

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestIdleMemoryCheck(t *testing.T) {
	const mib = 1 << 20
	type tick struct {
		allocs, reclaimable uint64
		want                bool
	}
	for _, tc := range []struct {
		name  string
		ticks []tick
	}{
		{"quiet from the start", []tick{{0, 8 * mib, false}, {10, 8 * mib, false}}},
		{"busy then quiet: once", []tick{{8 * mib, 8 * mib, false}, {8 * mib, 8 * mib, true}, {8 * mib, 8 * mib, false}}},
		{"busy throughout", []tick{{8 * mib, 8 * mib, false}, {16 * mib, 8 * mib, false}, {24 * mib, 8 * mib, false}}},
		{"too little to return", []tick{{1 * mib, 1 * mib, false}, {1 * mib, 1 * mib, false}}},
		{"held until there is enough", []tick{{1 * mib, 1 * mib, false}, {1 * mib, 1 * mib, false}, {1*mib + 10, 3 * mib, true}}},
		{"garbage no collection has seen yet", []tick{{8 * mib, 0, false}, {8 * mib, 0, true}}},
		{"counted from the last return", []tick{{8 * mib, 8 * mib, false}, {8 * mib, 8 * mib, true}, {9 * mib, 1 * mib, false}, {9 * mib, 1 * mib, false}}},
		{"busy again after a return", []tick{{8 * mib, 8 * mib, false}, {8 * mib, 8 * mib, true}, {16 * mib, 8 * mib, false}, {16 * mib, 8 * mib, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m idleMemory
			for i, tk := range tc.ticks {
				if got := m.check(heapMetrics{allocs: tk.allocs, reclaimable: tk.reclaimable}); got != tk.want {
					t.Errorf("tick %d (allocs %d, reclaimable %d): return = %v, want %v", i, tk.allocs, tk.reclaimable, got, tk.want)
				}
			}
		})
	}
}

var sink []byte

// TestReturnIdleMemory runs the check on this process's own heap: nothing
// is returned while it allocates, the garbage of the burst is returned once
// it stops, and only once.
func TestReturnIdleMemory(t *testing.T) {
	var calls atomic.Int32
	real := freeOSMemory
	freeOSMemory = func() { real(); calls.Add(1) }
	t.Cleanup(func() { freeOSMemory = real })

	const every = 100 * time.Millisecond
	stop := returnIdleMemory(every)
	defer stop()

	// 1 MiB of garbage per iteration, the last 16 MiB kept live until the
	// burst ends: then that much is garbage at once, whatever the
	// collector and scavenger did meanwhile (on a loaded machine they
	// could otherwise leave less than minReturnBytes to return).
	var last [16][]byte
	for i, end := 0, time.Now().Add(5*every); time.Now().Before(end); i++ {
		last[i%len(last)] = make([]byte, 1<<20)
		sink = last[i%len(last)]
		time.Sleep(every / 10)
	}
	last = [16][]byte{}
	sink = nil
	if n := calls.Load(); n != 0 {
		t.Fatalf("memory returned %d times while the process allocated", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(every)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("memory returned %d times after the burst, want 1", n)
	}
	if h := readHeapMetrics(); h.reclaimable >= minReturnBytes {
		t.Errorf("after the return %d bytes are still reclaimable", h.reclaimable)
	}
	time.Sleep(3 * every)
	if n := calls.Load(); n != 1 {
		t.Errorf("memory returned %d times in all, want 1: idle intervals after a return must not collect again", n)
	}
}
