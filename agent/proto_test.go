package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	frames := []Frame{
		{Stream: 1, Type: FrameOpen, Payload: []byte(`{"op":"sys.info"}`)},
		{Stream: 7, Type: FrameEnd},
		{Stream: 0xffffffff, Type: FrameWindow, Payload: []byte{0, 4, 0, 0}},
		{Stream: 3, Type: FrameData, Payload: append([]byte{ChanStdout}, bytes.Repeat([]byte("x"), 70000)...)},
		{Stream: 2, Type: FrameType(200), Payload: []byte("unknown type")},
	}
	var buf bytes.Buffer
	for _, f := range frames {
		buf.Write(encodeFrame(f.Stream, f.Type, f.Payload))
	}
	fr := NewFrameReader(&buf)
	for i, want := range frames {
		got, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.Stream != want.Stream || got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("frame %d: got %+v, want %+v", i, got, want)
		}
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after last frame: %v, want EOF", err)
	}
}

func TestFrameHeaderLayout(t *testing.T) {
	b := encodeFrame(0x01020304, FrameResult, []byte("ab"))
	want := []byte{0, 0, 0, 2, 1, 2, 3, 4, 5, 'a', 'b'}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded % x, want % x", b, want)
	}
	d := encodeData(9, ChanStderr, []byte("hi"))
	if !bytes.Equal(d, []byte{0, 0, 0, 3, 0, 0, 0, 9, 2, 2, 'h', 'i'}) {
		t.Fatalf("DATA encoded % x", d)
	}
	w := encodeWindow(5, 262144)
	if !bytes.Equal(w, []byte{0, 0, 0, 4, 0, 0, 0, 5, 8, 0, 4, 0, 0}) {
		t.Fatalf("WINDOW encoded % x", w)
	}
}

func TestFrameTooLarge(t *testing.T) {
	// Exactly the maximum is fine.
	ok := encodeFrame(1, FrameData, make([]byte, maxPayloadBytes))
	if _, err := NewFrameReader(bytes.NewReader(ok)).ReadFrame(); err != nil {
		t.Fatalf("max-size frame: %v", err)
	}
	hdr := make([]byte, frameHeaderBytes)
	binary.BigEndian.PutUint32(hdr[0:4], maxPayloadBytes+1)
	binary.BigEndian.PutUint32(hdr[4:8], 1)
	hdr[8] = byte(FrameData)
	_, err := NewFrameReader(bytes.NewReader(hdr)).ReadFrame()
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized frame: %v, want ErrFrameTooLarge", err)
	}
}

func TestTruncatedFrame(t *testing.T) {
	b := encodeFrame(1, FrameOpen, []byte("{}"))
	_, err := NewFrameReader(bytes.NewReader(b[:len(b)-1])).ReadFrame()
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated payload: %v, want ErrUnexpectedEOF", err)
	}
	_, err = NewFrameReader(bytes.NewReader(b[:5])).ReadFrame()
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated header: %v, want ErrUnexpectedEOF", err)
	}
}

func TestWaitMagicSkipsGarbage(t *testing.T) {
	for _, garbage := range []string{
		"",
		"hello",
		"NSAGENT",             // partial magic
		"NSAGENNSAGENT",       // restart inside a partial match
		"NNNNSAGENT2NSAGENT0", // near misses
		string(bytes.Repeat([]byte{0, 0xff, 'N'}, 1000)),
	} {
		var buf bytes.Buffer
		buf.WriteString(garbage)
		buf.WriteString(magic)
		buf.Write(encodeFrame(4, FrameOpen, []byte("{}")))
		fr := NewFrameReader(&buf)
		if err := fr.WaitMagic(); err != nil {
			t.Fatalf("garbage %q: %v", garbage, err)
		}
		f, err := fr.ReadFrame()
		if err != nil || f.Stream != 4 || f.Type != FrameOpen {
			t.Fatalf("garbage %q: frame %+v, %v", garbage, f, err)
		}
	}
	fr := NewFrameReader(bytes.NewReader([]byte("NSAGENT")))
	if err := fr.WaitMagic(); err != io.EOF {
		t.Fatalf("no magic: %v, want EOF", err)
	}
}

func TestSplitReads(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString("junk" + magic)
	var want []Frame
	for i := 1; i <= 50; i++ {
		f := Frame{Stream: uint32(i), Type: FrameData, Payload: append([]byte{0}, bytes.Repeat([]byte{byte(i)}, i*37)...)}
		want = append(want, f)
		buf.Write(encodeFrame(f.Stream, f.Type, f.Payload))
	}
	for name, r := range map[string]io.Reader{
		"one byte": iotest.OneByteReader(bytes.NewReader(buf.Bytes())),
		"half":     iotest.HalfReader(bytes.NewReader(buf.Bytes())),
	} {
		fr := NewFrameReader(r)
		if err := fr.WaitMagic(); err != nil {
			t.Fatalf("%s: magic: %v", name, err)
		}
		for _, w := range want {
			got, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got.Stream != w.Stream || !bytes.Equal(got.Payload, w.Payload) {
				t.Fatalf("%s: frame %d differs", name, w.Stream)
			}
		}
	}
}

// A magic arriving where a frame header is expected fails (ErrUnexpectedMagic)
// without being consumed, so WaitMagic on the same reader finds it.
func TestMagicInsteadOfHeader(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString(magic)
	buf.Write(encodeFrame(1, FrameOpen, []byte("{}")))
	buf.WriteString(magic)
	buf.Write(encodeFrame(2, FrameOpen, []byte("{}")))
	fr := NewFrameReader(&buf)
	if err := fr.WaitMagic(); err != nil {
		t.Fatal(err)
	}
	if f, err := fr.ReadFrame(); err != nil || f.Stream != 1 {
		t.Fatalf("first frame %+v %v", f, err)
	}
	if _, err := fr.ReadFrame(); !errors.Is(err, ErrUnexpectedMagic) {
		t.Fatalf("magic as header: %v", err)
	}
	if err := fr.WaitMagic(); err != nil {
		t.Fatal(err)
	}
	if f, err := fr.ReadFrame(); err != nil || f.Stream != 2 {
		t.Fatalf("frame after the second magic %+v %v", f, err)
	}
}

// A magic (8 bytes, shorter than a header) arriving where a header is
// expected must end the session at once, not wait for a ninth byte.
func TestReadFrameMagicInPlaceOfHeaderDoesNotBlock(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	fr := NewFrameReader(pr)
	go func() { _, _ = pw.Write([]byte(magic)) }()
	done := make(chan error, 1)
	go func() {
		_, err := fr.ReadFrame()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnexpectedMagic) {
			t.Fatalf("got %v, want ErrUnexpectedMagic", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadFrame blocked on a bare magic")
	}
	go func() { _, _ = pw.Write([]byte{0}) }()
	if err := fr.WaitMagic(); err != nil {
		t.Fatalf("the magic must stay buffered for the next session: %v", err)
	}
}
