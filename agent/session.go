package main

// Session multiplexing and flow control.
//
// A session is one host connection. The session's own goroutine reads
// frames and dispatches them; it never blocks on a stream. Each OPEN starts
// a goroutine running the op handler. All outgoing frames go through one
// writer goroutine (frameWriter), so frames never interleave.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// errSessionClosed is returned to senders once the session has ended.
var errSessionClosed = errors.New("session closed")

// frameWriter serializes outgoing frames onto the transport from a single
// goroutine. Senders either wait until their frame was written (stream
// goroutines, which gives natural backpressure) or only enqueue (the
// session reader, which must never block on the host).
type frameWriter struct {
	w      io.Writer
	onFail func(error)

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []*outFrame
	closed bool
	err    error

	exited chan struct{}
}

type outFrame struct {
	buf  []byte
	done chan struct{} // nil when nobody waits
	err  error         // valid once done is closed
}

// maxWriteBatch bounds how many queued bytes are coalesced into one Write.
const maxWriteBatch = 256 << 10

func newFrameWriter(w io.Writer, onFail func(error)) *frameWriter {
	fw := &frameWriter{w: w, onFail: onFail, exited: make(chan struct{})}
	fw.cond = sync.NewCond(&fw.mu)
	go fw.run()
	return fw
}

// send queues buf. When wait is true it returns after buf was written (or
// the session ended).
func (fw *frameWriter) send(buf []byte, wait bool) error {
	of := &outFrame{buf: buf}
	if wait {
		of.done = make(chan struct{})
	}
	fw.mu.Lock()
	if fw.closed {
		fw.mu.Unlock()
		return errSessionClosed
	}
	fw.queue = append(fw.queue, of)
	fw.cond.Signal()
	fw.mu.Unlock()
	if !wait {
		return nil
	}
	<-of.done
	return of.err
}

// close stops the writer: queued frames are dropped, the goroutine exits
// after the Write in progress (if any) returns.
func (fw *frameWriter) close() {
	fw.mu.Lock()
	fw.closed = true
	fw.cond.Broadcast()
	fw.mu.Unlock()
}

func (fw *frameWriter) run() {
	defer close(fw.exited)
	var batch []byte
	for {
		fw.mu.Lock()
		for len(fw.queue) == 0 && !fw.closed {
			fw.cond.Wait()
		}
		if fw.closed {
			q := fw.queue
			fw.queue = nil
			fw.mu.Unlock()
			finishFrames(q, errSessionClosed)
			return
		}
		// Take as many queued frames as fit in one batch (at least one).
		n, size := 0, 0
		for n < len(fw.queue) && (n == 0 || size+len(fw.queue[n].buf) <= maxWriteBatch) {
			size += len(fw.queue[n].buf)
			n++
		}
		items := append([]*outFrame(nil), fw.queue[:n]...)
		fw.queue = fw.queue[n:]
		fw.mu.Unlock()

		buf := items[0].buf
		if len(items) > 1 {
			batch = batch[:0]
			for _, it := range items {
				batch = append(batch, it.buf...)
			}
			buf = batch
		}
		err := fw.write(buf)
		if err == errSessionClosed {
			finishFrames(items, err)
			continue // the loop sees closed and exits
		}
		if err != nil {
			err = fmt.Errorf("write to host: %w", err)
			fw.mu.Lock()
			fw.closed = true
			fw.err = err
			q := fw.queue
			fw.queue = nil
			fw.mu.Unlock()
			finishFrames(items, err)
			finishFrames(q, err)
			if fw.onFail != nil {
				fw.onFail(err)
			}
			return
		}
		finishFrames(items, nil)
	}
}

// writePiece bounds a single Write, so that a writer that blocked while
// the host was away (virtio: write waits for the host to come back) stops
// soon after the session has ended instead of pushing a whole batch of
// stale frames into the next connection.
const writePiece = 32 << 10

func (fw *frameWriter) write(buf []byte) error {
	for len(buf) > 0 {
		n := len(buf)
		if n > writePiece {
			n = writePiece
		}
		if _, err := fw.w.Write(buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
		if len(buf) > 0 {
			fw.mu.Lock()
			closed := fw.closed
			fw.mu.Unlock()
			if closed {
				return errSessionClosed
			}
		}
	}
	return nil
}

func finishFrames(items []*outFrame, err error) {
	for _, it := range items {
		if it.done != nil {
			it.err = err
			close(it.done)
		}
	}
}

// session is the state of one host connection.
type session struct {
	agent  *Agent
	fw     *frameWriter
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	streams map[uint32]*stream
}

// ServeConn runs one session over rw until the transport reports EOF or an
// error, or a protocol error (oversized frame) occurs. closeConn, when not
// nil, is called to unblock the reader after a write error and when the
// session ends; without it (virtio) the session keeps reading (and
// discarding) until the transport itself reports the end. ServeConn returns
// after the writer goroutine has stopped touching rw, so the caller may
// start a new session on the same transport. Stream goroutines may still be
// finishing; they can no longer write to rw. It returns the number of bytes
// read from rw.
func (a *Agent) ServeConn(rw io.ReadWriter, closeConn func()) (int64, error) {
	return a.serveSession(NewFrameReader(rw), rw, closeConn)
}

// serveSession is ServeConn with a frame reader that may be shared by
// successive sessions on the same transport (its buffered bytes carry
// over). It returns the number of bytes read during this session.
func (a *Agent) serveSession(fr *FrameReader, w io.Writer, closeConn func()) (int64, error) {
	startBytes := fr.BytesRead()
	if err := fr.WaitMagic(); err != nil {
		return fr.BytesRead() - startBytes, fmt.Errorf("waiting for magic: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{agent: a, ctx: ctx, cancel: cancel, streams: make(map[uint32]*stream)}
	s.fw = newFrameWriter(w, func(error) {
		cancel()
		if closeConn != nil {
			closeConn()
		}
	})
	a.sessionStarted()
	defer a.sessionEnded()
	_ = s.fw.send([]byte(magic), false)

	var err error
	for {
		var f Frame
		f, err = fr.ReadFrame()
		if err != nil {
			break
		}
		if ctx.Err() != nil {
			continue // the writer failed: drain until the transport ends
		}
		s.dispatch(f)
	}
	s.shutdown()
	if closeConn != nil {
		closeConn()
	}
	<-s.fw.exited
	if err == io.EOF {
		err = nil
	}
	return fr.BytesRead() - startBytes, err
}

// shutdown cancels every stream of the session and stops the writer.
func (s *session) shutdown() {
	s.cancel()
	s.mu.Lock()
	for id, st := range s.streams {
		st.cancel()
		delete(s.streams, id)
	}
	s.mu.Unlock()
	s.fw.close()
}

func (s *session) stream(id uint32) *stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[id]
}

// dispatch handles one frame from the host. Frames for unknown streams and
// frames of unknown type are ignored: they race with stream completion.
func (s *session) dispatch(f Frame) {
	if f.Stream == 0 {
		return // reserved
	}
	switch f.Type {
	case FrameOpen:
		s.open(f.Stream, f.Payload)
	case FrameData:
		if st := s.stream(f.Stream); st != nil {
			st.pushData(f.Payload)
		}
	case FrameEnd:
		if st := s.stream(f.Stream); st != nil {
			st.pushEnd()
		}
	case FrameCancel:
		s.mu.Lock()
		st := s.streams[f.Stream]
		delete(s.streams, f.Stream)
		s.mu.Unlock()
		if st != nil {
			st.cancel()
		}
	case FrameWindow:
		if st := s.stream(f.Stream); st != nil && len(f.Payload) == 4 {
			st.addCredit(int64(binary.BigEndian.Uint32(f.Payload)))
		}
	}
}

// sendError answers a stream with ERROR from the reader goroutine (no wait).
func (s *session) sendError(id uint32, e *OpError) {
	b, _ := marshalJSON(e)
	_ = s.fw.send(encodeFrame(id, FrameError, b), false)
}

func (s *session) open(id uint32, payload []byte) {
	var hdr struct {
		Op *string `json:"op"`
	}
	s.mu.Lock()
	existing := s.streams[id]
	if existing != nil {
		// The id is in use: the duplicate OPEN is answered with ERROR on
		// that id, which closes the id for the host, so the existing stream
		// is cancelled silently.
		delete(s.streams, id)
	}
	s.mu.Unlock()
	if existing != nil {
		existing.cancel()
		s.sendError(id, opErrorf(CodeBadRequest, "stream %d is already open", id))
		return
	}
	if err := json.Unmarshal(payload, &hdr); err != nil {
		s.sendError(id, opErrorf(CodeBadRequest, "OPEN payload: %v", err))
		return
	}
	if hdr.Op == nil {
		s.sendError(id, opErrorf(CodeBadRequest, "OPEN payload: missing \"op\""))
		return
	}
	spec, ok := opTable[*hdr.Op]
	if !ok {
		s.sendError(id, opErrorf(CodeUnknownOp, "unknown op %q", *hdr.Op))
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	st := &stream{
		id:         id,
		op:         *hdr.Op,
		s:          s,
		agent:      s.agent,
		ctx:        ctx,
		cancelFn:   cancel,
		sendCredit: initialWindowBytes,
		recvCredit: initialWindowBytes,
		creditSig:  make(chan struct{}, 1),
		inSig:      make(chan struct{}, 1),
		takesInput: spec.input,
	}
	s.mu.Lock()
	s.streams[id] = st
	s.mu.Unlock()
	s.agent.streamsWG.Add(1)
	go st.run(spec.handler, payload)
}

// stream is one open stream of a session.
type stream struct {
	id       uint32
	op       string
	s        *session
	agent    *Agent
	ctx      context.Context
	cancelFn context.CancelFunc

	mu         sync.Mutex
	sendCredit int64 // bytes the agent may still send as DATA
	creditSig  chan struct{}

	takesInput bool     // DATA from the host is queued for the handler
	in         [][]byte // DATA from the host not yet consumed
	inEnded    bool     // END received
	inErr      *OpError // flow-control violation
	recvCredit int64    // bytes the host may still send
	inSig      chan struct{}
}

func (st *stream) cancel() { st.cancelFn() }

func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run executes the op handler and sends its final answer, unless the stream
// was cancelled (or the session ended) in the meantime.
func (st *stream) run(h opHandler, req json.RawMessage) {
	defer st.agent.streamsWG.Done()
	defer st.cancelFn()
	res, err := callHandler(h, st, req)
	st.s.mu.Lock()
	if st.s.streams[st.id] == st {
		delete(st.s.streams, st.id)
	}
	st.s.mu.Unlock()
	if st.ctx.Err() != nil {
		return // cancelled: no answer
	}
	if err != nil {
		b, _ := marshalJSON(toOpError(st.op, err))
		_ = st.s.fw.send(encodeFrame(st.id, FrameError, b), true)
		return
	}
	if res == nil {
		res = struct{}{}
	}
	b, merr := marshalJSON(res)
	if merr != nil {
		b, _ = marshalJSON(opErrorf(CodeIOError, "%s: encoding result: %v", st.op, merr))
		_ = st.s.fw.send(encodeFrame(st.id, FrameError, b), true)
		return
	}
	_ = st.s.fw.send(encodeFrame(st.id, FrameResult, b), true)
}

// marshalJSON encodes a frame payload: without Go's HTML escaping (which
// makes <, > and & six bytes each), and never over maxPayloadBytes (the host
// would end the whole session): an answer that large is an io_error instead.
func marshalJSON(v interface{}) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := bytes.TrimRight(buf.Bytes(), "\n")
	if len(b) > maxPayloadBytes {
		return nil, fmt.Errorf("the answer is %d bytes, over the frame limit of %d", len(b), maxPayloadBytes)
	}
	return b, nil
}

// callHandler runs h, turning a panic into an io_error so one bad request
// cannot take the agent down.
func callHandler(h opHandler, st *stream, req json.RawMessage) (res interface{}, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, opErrorf(CodeIOError, "%s: internal error: %v", st.op, r)
		}
	}()
	return h(st, req)
}

// sendFrame writes a frame for this stream, waiting until it was written.
func (st *stream) sendFrame(buf []byte) error {
	if err := st.ctx.Err(); err != nil {
		return err
	}
	if err := st.s.fw.send(buf, true); err != nil {
		return err
	}
	return st.ctx.Err()
}

// event sends an EVENT frame with v as JSON.
func (st *stream) event(ev agentEvent) error {
	b, err := st.encodeEvent(ev)
	if err != nil {
		return err
	}
	return st.sendFrame(encodeFrame(st.id, FrameEvent, b))
}

// addCredit handles a WINDOW frame from the host.
func (st *stream) addCredit(n int64) {
	st.mu.Lock()
	st.sendCredit += n
	if st.sendCredit > 1<<50 {
		st.sendCredit = 1 << 50
	}
	st.mu.Unlock()
	notify(st.creditSig)
}

// acquire waits until the host granted credit and takes up to max bytes of
// it. Unused credit must be given back with release.
func (st *stream) acquire(max int) (int, error) {
	for {
		st.mu.Lock()
		if st.sendCredit > 0 {
			n := int64(max)
			if st.sendCredit < n {
				n = st.sendCredit
			}
			st.sendCredit -= n
			st.mu.Unlock()
			return int(n), nil
		}
		st.mu.Unlock()
		select {
		case <-st.creditSig:
		case <-st.ctx.Done():
			return 0, st.ctx.Err()
		}
	}
}

func (st *stream) release(n int) {
	if n <= 0 {
		return
	}
	st.mu.Lock()
	st.sendCredit += int64(n)
	st.mu.Unlock()
	notify(st.creditSig)
}

// sendData sends data on a channel as DATA frames, within the host's credit
// and the maximum DATA frame size.
func (st *stream) sendData(channel byte, data []byte) error {
	for len(data) > 0 {
		max := len(data)
		if max > maxDataChunkPayload {
			max = maxDataChunkPayload
		}
		n, err := st.acquire(max)
		if err != nil {
			return err
		}
		if err := st.sendFrame(encodeData(st.id, channel, data[:n])); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// pushData queues a DATA frame from the host (called by the reader).
func (st *stream) pushData(payload []byte) {
	if len(payload) == 0 {
		return
	}
	data := payload[1:]
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inEnded || st.inErr != nil {
		return
	}
	st.recvCredit -= int64(len(data))
	if st.recvCredit < 0 {
		st.inErr = opErrorf(CodeBadRequest, "stream %d: host sent DATA beyond its credit", st.id)
		st.in = nil
		notify(st.inSig)
		return
	}
	if !st.takesInput || payload[0] != ChanMain {
		// Not consumed by this op: hand the credit straight back.
		st.recvCredit += int64(len(data))
		if len(data) > 0 {
			_ = st.s.fw.send(encodeWindow(st.id, uint32(len(data))), false)
		}
		return
	}
	if len(data) > 0 {
		st.in = append(st.in, data)
		notify(st.inSig)
	}
}

// pushEnd records END from the host.
func (st *stream) pushEnd() {
	st.mu.Lock()
	st.inEnded = true
	st.mu.Unlock()
	notify(st.inSig)
}

// setTakesInput switches whether DATA from the host is kept for the handler.
// Switching it off drops what was queued and hands that credit back.
func (st *stream) setTakesInput(v bool) {
	st.mu.Lock()
	st.takesInput = v
	queued := 0
	if !v {
		for _, b := range st.in {
			queued += len(b)
		}
		st.in = nil
		st.recvCredit += int64(queued)
	}
	st.mu.Unlock()
	if queued > 0 {
		_ = st.s.fw.send(encodeWindow(st.id, uint32(queued)), false)
	}
}

// recv returns the next chunk of host DATA; io.EOF after END. The caller
// grants the credit back with grant once the chunk is consumed.
func (st *stream) recv() ([]byte, error) {
	for {
		st.mu.Lock()
		if st.inErr != nil {
			e := st.inErr
			st.mu.Unlock()
			return nil, e
		}
		if len(st.in) > 0 {
			b := st.in[0]
			st.in[0] = nil
			st.in = st.in[1:]
			st.mu.Unlock()
			return b, nil
		}
		if st.inEnded {
			st.mu.Unlock()
			return nil, io.EOF
		}
		st.mu.Unlock()
		select {
		case <-st.inSig:
		case <-st.ctx.Done():
			return nil, st.ctx.Err()
		}
	}
}

// grant gives the host n bytes of credit back after consuming its DATA.
func (st *stream) grant(n int) {
	if n <= 0 || st.ctx.Err() != nil {
		return
	}
	st.mu.Lock()
	st.recvCredit += int64(n)
	st.mu.Unlock()
	_ = st.s.fw.send(encodeWindow(st.id, uint32(n)), false)
}
