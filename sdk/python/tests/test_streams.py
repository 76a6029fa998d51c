"""NDJSON parsing, base64 output decoding (UTF-8 split across chunks), command events and the
paginator, all without a server."""

import base64
import json
import unittest

from nullspace import CommandResult, SandboxError, SandboxNotRunningError, SandboxPaginator, ServiceUnavailableError
from nullspace import TimeoutError as NsTimeoutError
from nullspace.commands import CommandOutput, consume_events
from nullspace.connection import iter_ndjson


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def split_every(data: bytes, n: int):
    return [data[i : i + n] for i in range(0, len(data), n)]


class NdjsonTest(unittest.TestCase):
    EVENTS = [
        {"type": "start", "pid": 7},
        {"type": "stdout", "data": b64("héllo\n".encode())},
        {"type": "end", "pid": 7, "exitCode": 0, "signal": None, "timedOut": False},
    ]

    def encoded(self) -> bytes:
        return b"".join(json.dumps(e).encode() + b"\n" for e in self.EVENTS)

    def test_any_chunking(self):
        data = self.encoded()
        for n in (1, 2, 3, 7, 64, len(data)):
            with self.subTest(chunk=n):
                self.assertEqual(list(iter_ndjson(split_every(data, n))), self.EVENTS)

    def test_blank_lines_crlf_and_missing_final_newline(self):
        data = b'\n{"a":1}\r\n\n  \n{"b":2}'
        self.assertEqual(list(iter_ndjson([data])), [{"a": 1}, {"b": 2}])

    def test_lines_are_yielded_as_they_complete(self):
        def chunks():
            yield b'{"n":1}\n{"n"'
            # the first line must already have been handed out before this chunk is asked for
            self.assertEqual(seen, [{"n": 1}])
            yield b':2}\n'

        seen = []
        for ev in iter_ndjson(chunks()):
            seen.append(ev)
        self.assertEqual(seen, [{"n": 1}, {"n": 2}])

    def test_malformed_line(self):
        with self.assertRaises(SandboxError) as cm:
            list(iter_ndjson([b'{"ok":1}\nnot json\n']))
        self.assertEqual(cm.exception.code, "invalid_response")


class OutputDecodingTest(unittest.TestCase):
    def test_utf8_character_split_across_chunks(self):
        text = "a€b😀c"  # 3- and 4-byte sequences
        raw = text.encode("utf-8")
        for n in (1, 2, 3):
            with self.subTest(chunk=n):
                pieces = []
                out = CommandOutput(on_stdout=pieces.append)
                for part in split_every(raw, n):
                    out.add("stdout", b64(part))
                out.finish()
                self.assertEqual(out.stdout, text)
                self.assertEqual("".join(pieces), text)
                self.assertNotIn("\ufffd", "".join(pieces))
                # no callback for a chunk that is only the start of a character
                self.assertTrue(all(pieces))

    def test_streams_decode_independently(self):
        euro = "€".encode()
        out_pieces, err_pieces = [], []
        out = CommandOutput(out_pieces.append, err_pieces.append)
        out.add("stdout", b64(euro[:1]))
        out.add("stderr", b64(euro[:2]))
        out.add("stdout", b64(euro[1:]))
        out.add("stderr", b64(euro[2:] + b"!"))
        out.finish()
        self.assertEqual((out.stdout, out.stderr), ("€", "€!"))
        self.assertEqual((out_pieces, err_pieces), (["€"], ["€!"]))

    def test_invalid_and_truncated_bytes_are_replaced(self):
        out = CommandOutput()
        out.add("stdout", b64(b"ok\xff"))
        out.add("stdout", b64("€".encode()[:2]))
        out.finish()
        self.assertEqual(out.stdout, "ok\ufffd\ufffd")

    def test_malformed_base64(self):
        with self.assertRaises(SandboxError) as cm:
            CommandOutput().add("stdout", "***")
        self.assertEqual(cm.exception.code, "invalid_response")


def ev_out(kind, data: bytes):
    return {"type": kind, "data": b64(data)}


class ConsumeEventsTest(unittest.TestCase):
    def test_result(self):
        events = [
            {"type": "start", "pid": 12},
            ev_out("stdout", b"4"),
            ev_out("stderr", b"warn\n"),
            {"type": "lost", "bytes": 10},
            ev_out("stdout", b"2\n"),
            {"type": "end", "pid": 12, "exitCode": 3, "signal": None, "timedOut": False, "running": False},
        ]
        r = consume_events(events, CommandOutput())
        # the lost bytes are counted (the output has a hole the caller can see)
        self.assertEqual(r, CommandResult(pid=12, exit_code=3, signal=None, stdout="42\n", stderr="warn\n", timed_out=False, lost_bytes=10))

    def test_pid_from_start_event(self):
        r = consume_events([{"type": "start", "pid": 5}, {"type": "end", "exitCode": None, "signal": "SIGKILL"}], CommandOutput())
        self.assertEqual((r.pid, r.exit_code, r.signal), (5, None, "SIGKILL"))

    def test_timeout_raises_with_result(self):
        events = [ev_out("stdout", b"partial"), {"type": "end", "pid": 9, "exitCode": None, "signal": "SIGKILL", "timedOut": True}]
        with self.assertRaises(NsTimeoutError) as cm:
            consume_events(events, CommandOutput(), 9)
        self.assertEqual(cm.exception.code, "command_timeout")
        self.assertEqual(cm.exception.result.stdout, "partial")
        self.assertTrue(cm.exception.result.timed_out)
        self.assertEqual(cm.exception.result.pid, 9)

    def test_error_event(self):
        with self.assertRaises(SandboxNotRunningError):
            consume_events([{"type": "error", "code": "sandbox_not_running", "message": "gone"}], CommandOutput())
        with self.assertRaises(ServiceUnavailableError) as cm:
            consume_events([{"type": "error", "code": "agent_unavailable", "message": "lost the agent"}], CommandOutput())
        self.assertEqual(cm.exception.message, "lost the agent")

    def test_stream_without_end(self):
        with self.assertRaises(SandboxError) as cm:
            consume_events([ev_out("stdout", b"x")], CommandOutput())
        self.assertEqual(cm.exception.code, "stream_ended")


class PaginatorTest(unittest.TestCase):
    def make(self, pages, start=None):
        calls = []

        def fetch(token):
            calls.append(token)
            items, nxt = pages[token]
            return list(items), nxt

        return SandboxPaginator(fetch, start), calls

    PAGES = {None: ([1, 2], "t1"), "t1": ([3, 4], "t2"), "t2": ([5], None)}

    def test_iterates_every_page_lazily(self):
        p, calls = self.make(self.PAGES)
        self.assertEqual(calls, [])  # nothing fetched before iteration
        it = iter(p)
        self.assertEqual(next(it), 1)
        self.assertEqual(calls, [None])
        self.assertEqual(list(it), [2, 3, 4, 5])
        self.assertEqual(calls, [None, "t1", "t2"])
        self.assertFalse(p.has_next)
        self.assertEqual(list(p), [])

    def test_next_items_page_by_page(self):
        p, calls = self.make(self.PAGES)
        self.assertTrue(p.has_next)
        self.assertIsNone(p.next_token)
        self.assertEqual(p.next_items(), [1, 2])
        self.assertEqual(p.next_token, "t1")
        self.assertEqual(p.next_items(), [3, 4])
        self.assertTrue(p.has_next)
        self.assertEqual(p.next_items(), [5])
        self.assertFalse(p.has_next)
        self.assertIsNone(p.next_token)
        self.assertEqual(p.next_items(), [])
        self.assertEqual(calls, [None, "t1", "t2"])

    def test_start_token_and_empty_result(self):
        p, calls = self.make(self.PAGES, "t2")
        self.assertEqual(list(p), [5])
        self.assertEqual(calls, ["t2"])
        p, _ = self.make({None: ([], None)})
        self.assertEqual(list(p), [])
        self.assertFalse(p.has_next)


if __name__ == "__main__":
    unittest.main()
