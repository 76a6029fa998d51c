package main

// Framing of the nullspace agent protocol (spec/agent.json "frame").
//
// Every frame is: u32 big-endian payload length | u32 big-endian stream id |
// u8 type | payload. A session starts with the 8-byte magic in each
// direction; everything received before the magic is discarded.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	protocolVersion     = 1
	magic               = "NSAGENT1"
	frameHeaderBytes    = 9
	maxPayloadBytes     = 1 << 20 // frames larger than this end the session
	initialWindowBytes  = 256 << 10
	maxDataFrameBytes   = 64 << 10 // a DATA frame's whole payload (channel byte included) stays within this
	outputBufferBytes   = 4 << 20  // per-process output ring
	maxDataChunkPayload = maxDataFrameBytes - 1
)

// FrameType is the u8 type of a frame.
type FrameType uint8

const (
	FrameOpen   FrameType = 1
	FrameData   FrameType = 2
	FrameEnd    FrameType = 3
	FrameEvent  FrameType = 4
	FrameResult FrameType = 5
	FrameError  FrameType = 6
	FrameCancel FrameType = 7
	FrameWindow FrameType = 8
)

// frameTypeNames maps the spec's names to the frame type values (checked
// against spec/agent.json by the tests).
var frameTypeNames = map[string]FrameType{
	"OPEN":   FrameOpen,
	"DATA":   FrameData,
	"END":    FrameEnd,
	"EVENT":  FrameEvent,
	"RESULT": FrameResult,
	"ERROR":  FrameError,
	"CANCEL": FrameCancel,
	"WINDOW": FrameWindow,
}

func (t FrameType) String() string {
	for name, v := range frameTypeNames {
		if v == t {
			return name
		}
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Data channels (first payload byte of a DATA frame).
const (
	ChanMain   byte = 0
	ChanStdout byte = 1
	ChanStderr byte = 2
)

// Frame is one decoded frame.
type Frame struct {
	Stream  uint32
	Type    FrameType
	Payload []byte
}

// ErrFrameTooLarge is returned by the reader when a frame announces a
// payload over maxPayloadBytes; the session must end.
var ErrFrameTooLarge = errors.New("frame payload exceeds the maximum size")

// encodeFrame returns header+payload as one buffer, so a frame is always
// written with a single Write call.
func encodeFrame(stream uint32, typ FrameType, payload []byte) []byte {
	buf := make([]byte, frameHeaderBytes+len(payload))
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(buf[4:8], stream)
	buf[8] = byte(typ)
	copy(buf[frameHeaderBytes:], payload)
	return buf
}

// encodeData builds a DATA frame for the given channel.
func encodeData(stream uint32, channel byte, data []byte) []byte {
	buf := make([]byte, frameHeaderBytes+1+len(data))
	binary.BigEndian.PutUint32(buf[0:4], uint32(1+len(data)))
	binary.BigEndian.PutUint32(buf[4:8], stream)
	buf[8] = byte(FrameData)
	buf[9] = channel
	copy(buf[10:], data)
	return buf
}

// encodeWindow builds a WINDOW frame granting n bytes of credit.
func encodeWindow(stream uint32, n uint32) []byte {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], n)
	return encodeFrame(stream, FrameWindow, p[:])
}

// FrameReader decodes frames from a byte stream. It may outlive a session
// (virtio port): EOF is not sticky, reading goes on after it.
type FrameReader struct {
	r *bufio.Reader
	n int64 // bytes read from the underlying reader (buffered ones included)
}

type countingReader struct {
	r io.Reader
	n *int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// NewFrameReader wraps r. The returned reader buffers.
func NewFrameReader(r io.Reader) *FrameReader {
	fr := &FrameReader{}
	fr.r = bufio.NewReaderSize(countingReader{r: r, n: &fr.n}, 64<<10)
	return fr
}

// BytesRead is the number of bytes read from the underlying reader.
func (fr *FrameReader) BytesRead() int64 { return fr.n }

// WaitMagic discards bytes until the magic has been read.
func (fr *FrameReader) WaitMagic() error {
	matched := 0
	for matched < len(magic) {
		b, err := fr.r.ReadByte()
		if err != nil {
			return err
		}
		switch {
		case b == magic[matched]:
			matched++
		case b == magic[0]: // 'N' occurs only at the start of the magic
			matched = 1
		default:
			matched = 0
		}
	}
	return nil
}

// ErrUnexpectedMagic: a new session's magic where a frame header was
// expected (the host reconnected before this session saw it leave). The
// magic stays buffered for the next WaitMagic.
var ErrUnexpectedMagic = errors.New("session magic where a frame header was expected")

// ReadFrame reads the next frame. An io.EOF in the middle of a frame is
// reported as io.ErrUnexpectedEOF. The header is only consumed once it is
// known to be valid: after ErrFrameTooLarge (or EOF inside the header) its
// bytes are still buffered, so a following WaitMagic on the same reader
// scans them. That matters on the virtio port, where a host that
// reconnected before the old session noticed the disconnect sends its magic
// where the old session expects a frame header (as a length, the magic is
// far over the maximum).
func (fr *FrameReader) ReadFrame() (Frame, error) {
	// A new session's magic is 8 bytes, one less than a header: check for
	// it first, or the old session would wait forever for a 9th byte that
	// the host (waiting for our magic in reply) never sends.
	if m, err := fr.r.Peek(len(magic)); err == nil && string(m) == magic {
		return Frame{}, ErrUnexpectedMagic
	}
	hdr, err := fr.r.Peek(frameHeaderBytes)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n > maxPayloadBytes {
		return Frame{}, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	f := Frame{
		Stream: binary.BigEndian.Uint32(hdr[4:8]),
		Type:   FrameType(hdr[8]),
	}
	if _, err := fr.r.Discard(frameHeaderBytes); err != nil {
		return Frame{}, err
	}
	if n > 0 {
		f.Payload = make([]byte, n)
		if _, err := io.ReadFull(fr.r, f.Payload); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
	}
	return f, nil
}
