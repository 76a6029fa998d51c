package main

// outputRing is a process's bounded output buffer: the most recent output
// of stdout and stderr, interleaved in the order it was read, addressed by
// absolute byte offsets since the process started.

import "sort"

const (
	ringChunkOverhead = 64                  // accounted per chunk, so tiny writes cannot blow the bound
	ringMaxChunk      = maxDataChunkPayload // a chunk never exceeds one DATA frame
)

type outChunk struct {
	ch   byte
	off  int64 // absolute offset of data[0]
	data []byte
}

type outputRing struct {
	limit  int
	chunks []outChunk // chunks[head:] are live
	head   int
	held   int   // accounted bytes: data + overhead per chunk
	start  int64 // absolute offset of the oldest held byte
	end    int64 // absolute offset after the newest byte
}

func newOutputRing(limit int) outputRing { return outputRing{limit: limit} }

// append adds output of a channel, dropping the oldest bytes when over the
// limit.
func (r *outputRing) append(ch byte, p []byte) {
	for len(p) > 0 {
		live := r.chunks[r.head:]
		if n := len(live); n > 0 && live[n-1].ch == ch && len(live[n-1].data) < ringMaxChunk {
			last := &r.chunks[len(r.chunks)-1]
			k := ringMaxChunk - len(last.data)
			if k > len(p) {
				k = len(p)
			}
			last.data = append(last.data, p[:k]...)
			r.held += k
			r.end += int64(k)
			p = p[k:]
		} else {
			// the chunk before is done growing: its spare capacity is given back, so that
			// interleaved small writes cannot hold far more memory than the limit accounts for
			if n := len(live); n > 0 {
				last := &r.chunks[len(r.chunks)-1]
				if cap(last.data)-len(last.data) > ringChunkOverhead {
					last.data = append([]byte(nil), last.data...)
				}
			}
			k := len(p)
			if k > ringMaxChunk {
				k = ringMaxChunk
			}
			buf := make([]byte, k, minInt(ringMaxChunk, k*2+256))
			copy(buf, p[:k])
			r.chunks = append(r.chunks, outChunk{ch: ch, off: r.end, data: buf})
			r.held += k + ringChunkOverhead
			r.end += int64(k)
			p = p[k:]
		}
		r.trim()
	}
}

func (r *outputRing) trim() {
	for r.held > r.limit && r.head < len(r.chunks) {
		c := &r.chunks[r.head]
		over := r.held - r.limit
		if over < len(c.data) {
			// Dropping part of the oldest chunk is enough.
			c.data = c.data[over:]
			c.off += int64(over)
			r.held -= over
			r.start = c.off
			break
		}
		r.held -= len(c.data) + ringChunkOverhead
		r.start = c.off + int64(len(c.data))
		r.chunks[r.head] = outChunk{}
		r.head++
	}
	if r.head == len(r.chunks) {
		r.chunks = r.chunks[:0]
		r.head = 0
		r.start = r.end
	} else if r.head > 64 && r.head*2 > len(r.chunks) {
		n := copy(r.chunks, r.chunks[r.head:])
		for i := n; i < len(r.chunks); i++ {
			r.chunks[i] = outChunk{}
		}
		r.chunks = r.chunks[:n]
		r.head = 0
	}
}

// read copies up to max bytes starting at pos (start <= pos < end) from a
// single chunk, so the result has one channel. It returns the channel, the
// bytes and the offset after them.
func (r *outputRing) read(pos int64, max int) (byte, []byte, int64) {
	live := r.chunks[r.head:]
	// the last chunk whose offset is <= pos
	i := sort.Search(len(live), func(i int) bool { return live[i].off > pos }) - 1
	if i < 0 || max <= 0 {
		return 0, nil, pos
	}
	c := live[i]
	from := int(pos - c.off)
	if from >= len(c.data) {
		return 0, nil, pos
	}
	n := len(c.data) - from
	if n > max {
		n = max
	}
	out := make([]byte, n)
	copy(out, c.data[from:from+n])
	return c.ch, out, pos + int64(n)
}

// release frees the buffered output.
func (r *outputRing) release() {
	r.chunks = nil
	r.head = 0
	r.held = 0
	r.start = r.end
}

func minInt(a, b int) int {
	if a < b {
		return a
	}
	return b
}
