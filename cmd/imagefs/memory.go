package main

import (
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// serverMemoryLimit is the Go heap size past which the serving process
// collects garbage harder. What it keeps live is bounded (the index, the
// listing cache, the inodes the kernel knows: nodes/rootfs_evict.go);
// without a limit the collector lets the heap grow to twice that before
// it runs, and the process keeps the pages. At the bounds the live heap
// is about 180 MB: a limit much closer to it (224 MiB, 256 MiB) has the
// collector run without pause through a stat walk of every rootfs (56 %
// of the server's CPU, twice the time). GOMEMLIMIT overrides it.
const serverMemoryLimit = 288 << 20

func limitMemory() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(serverMemoryLimit)
	}
}

// Between bursts of requests a mount is idle for long stretches, holding
// what the last burst left behind: garbage not yet collected (the
// collector waits for the heap to double) and freed pages it keeps for
// reuse. returnIdleMemory collects and hands that back once a check
// interval passes with next to no allocation.
const (
	idleCheckInterval = time.Second
	idleAllocBytes    = 256 << 10 // allocated in an interval that still counts as idle
	minReturnBytes    = 2 << 20   // less is not worth a collection
)

// freeOSMemory is debug.FreeOSMemory; tests count the calls.
var freeOSMemory = debug.FreeOSMemory

// returnIdleMemory starts the idle check; stop ends it.
func returnIdleMemory(every time.Duration) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(every)
		defer tick.Stop()
		var idle idleMemory
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if idle.check(readHeapMetrics()) {
					freeOSMemory()
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

type heapMetrics struct {
	allocs      uint64 // bytes allocated since the start
	reclaimable uint64 // garbage as of the last collection, plus free pages not returned
}

// idleMemory decides, one interval at a time, when to return memory:
// in the first idle interval after a busy one, if there is enough of it.
// What the burst allocated counts as well as what the metrics call
// reclaimable: objects that died after the last collection are in
// neither "garbage" nor "free" until the next one, and a collection
// late in a burst leaves most of the burst's garbage there.
type idleMemory struct {
	lastAllocs   uint64
	returnAllocs uint64 // allocs at the last return
	busy         bool   // allocation since the last return
}

func (m *idleMemory) check(h heapMetrics) bool {
	allocated := h.allocs - m.lastAllocs
	m.lastAllocs = h.allocs
	if allocated > idleAllocBytes {
		m.busy = true
		return false
	}
	if !m.busy || max(h.reclaimable, h.allocs-m.returnAllocs) < minReturnBytes {
		return false
	}
	m.busy = false
	m.returnAllocs = h.allocs
	return true
}

func readHeapMetrics() heapMetrics {
	s := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	v := func(i int) uint64 { return s[i].Value.Uint64() }
	objects, live := v(1), v(2)
	garbage := uint64(0)
	if objects > live {
		garbage = objects - live
	}
	return heapMetrics{allocs: v(0), reclaimable: garbage + v(3)}
}
