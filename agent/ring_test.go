package main

import (
	"bytes"
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
