package main

import (
	"bytes"
	"runtime"
	"testing"
)

func TestOutputRing(t *testing.T) {
	r := newOutputRing(1000)
	r.append(ChanStdout, []byte("hello "))
	r.append(ChanStdout, []byte("world"))
	r.append(ChanStderr, []byte("err"))
	ch, data, next := r.read(0, 100)
	if ch != ChanStdout || string(data) != "hello world" || next != 11 {
		t.Fatalf("read: %d %q %d", ch, data, next)
	}
	ch, data, next = r.read(next, 2)
	if ch != ChanStderr || string(data) != "er" || next != 13 {
		t.Fatalf("read stderr: %d %q %d", ch, data, next)
	}
	// Overflow: the oldest bytes go, offsets stay absolute.
	for i := 0; i < 100; i++ {
		r.append(byte(1+i%2), bytes.Repeat([]byte{'a' + byte(i%26)}, 50))
	}
	if r.end != 14+5000 {
		t.Fatalf("end %d", r.end)
	}
	if r.held > r.limit {
		t.Fatalf("held %d over limit %d", r.held, r.limit)
	}
	if r.start <= 0 || r.start >= r.end {
		t.Fatalf("start %d end %d", r.start, r.end)
	}
	// Everything from start to end is readable, in order.
	pos, total := r.start, int64(0)
	for pos < r.end {
		_, d, n := r.read(pos, 7)
		if len(d) == 0 {
			t.Fatalf("empty read at %d", pos)
		}
		total += int64(len(d))
		pos = n
	}
	if total != r.end-r.start {
		t.Fatalf("read %d bytes, held range %d", total, r.end-r.start)
	}
	// Many tiny alternating writes stay within the bound too.
	r2 := newOutputRing(4096)
	for i := 0; i < 100000; i++ {
		r2.append(byte(1+i%2), []byte{'x'})
	}
	if r2.held > r2.limit || len(r2.chunks)-r2.head > r2.limit/ringChunkOverhead {
		t.Fatalf("tiny writes: held %d, chunks %d", r2.held, len(r2.chunks)-r2.head)
	}
}

// The memory a ring holds stays near its limit whatever the write pattern
// (interleaved tiny writes used to hold several times the limit in spare
// chunk capacity).
func TestRingMemoryStaysNearItsLimit(t *testing.T) {
	for _, size := range []int{1, 80, 4096} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		r := newOutputRing(4 << 20)
		p := make([]byte, size)
		for i := 0; i < (16<<20)/size; i++ {
			r.append(byte(1+i%2), p)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		if held > 3*(4<<20) {
			t.Errorf("%d-byte interleaved writes: the 4 MiB ring holds %.1f MiB", size, float64(held)/(1<<20))
		}
		runtime.KeepAlive(&r)
	}
}
