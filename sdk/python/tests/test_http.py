"""The SDK over HTTP against a scripted local fake server (no nullspace server needed):
auth header, query encoding, error bodies, connection failures, timeouts, streamed uploads,
pagination, command streams and background handles."""

import base64
import io
import json
import socket
import threading
import time
import unittest

import nullspace
from nullspace import (
    AuthenticationError,
    CommandResult,
    FileNotFoundError as NsFileNotFoundError,
    InvalidArgumentError,
    ProcessNotFoundError,
    Sandbox,
    SandboxError,
    SandboxNotFoundError,
    TimeoutError as NsTimeoutError,
)
from nullspace.connection import ApiClient, ConnectionConfig

from _fakeserver import FakeServer, Request, error_reply, json_reply

KEY = "fake-key"
SBX = "sbx_fake000000000001"


def sandbox_json(i=1, state="running", metadata=None):
    return {
        "sandboxId": f"sbx_fake{i:012d}",
        "template": "base",
        "snapshotId": None,
        "state": state,
        "metadata": metadata or {},
        "memoryMiB": 512,
        "vcpus": 1,
        "allowInternetAccess": True,
        "timeoutMs": 300000,
        "createdAt": "2024-05-06T07:08:09.123Z",
        "startedAt": "2024-05-06T07:08:10.000Z",
        "expiresAt": None,
        "endedAt": None,
        "endReason": None,
        "errorCode": None,
    }


def ndjson(*events):
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def out(kind, data: bytes):
    return {"type": kind, "data": base64.b64encode(data).decode()}


class HttpTestCase(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer().__enter__()
        self.addCleanup(self.server.__exit__)
        self.server.routes[("GET", f"/v1/sandboxes/{SBX}")] = lambda r: json_reply(200, sandbox_json())
        self.sandbox = Sandbox.connect(SBX, api_url=self.server.url, api_key=KEY)
        self.server.requests.clear()

    def route(self, method, path):
        def register(fn):
            self.server.routes[(method, path)] = fn
            return fn

        return register


class TransportTest(HttpTestCase):
    def test_bearer_and_sandbox_info(self):
        info = self.sandbox.get_info()
        req = self.server.requests[-1]
        self.assertEqual(req.headers["Authorization"], f"Bearer {KEY}")
        self.assertEqual(info.sandbox_id, SBX)
        self.assertEqual(info.memory_mib, 512)
        self.assertEqual(info.created_at.isoformat(), "2024-05-06T07:08:09.123000+00:00")
        self.assertIsNotNone(info.created_at.tzinfo)
        self.assertIsNone(info.expires_at)
        self.assertTrue(self.sandbox.is_running())
        # the class-level form
        self.assertEqual(Sandbox.get_info(SBX, api_url=self.server.url, api_key=KEY).sandbox_id, SBX)

    def test_create_body(self):
        self.route("POST", "/v1/sandboxes")(lambda r: json_reply(201, sandbox_json()))
        s = Sandbox.create("tpl", metadata={"a": "b"}, timeout_ms=5000, api_url=self.server.url, api_key=KEY)
        self.assertEqual(s.sandbox_id, SBX)
        self.assertEqual(self.server.requests[-1].json(), {"template": "tpl", "metadata": {"a": "b"}, "timeoutMs": 5000})
        self.assertEqual(self.server.requests[-1].headers["Content-Type"], "application/json")
        Sandbox.create(api_url=self.server.url, api_key=KEY, allow_internet_access=False, envs={"X": "1"})
        self.assertEqual(self.server.requests[-1].json(), {"template": "base", "envs": {"X": "1"}, "allowInternetAccess": False})

    def test_error_body_mapping(self):
        self.route("GET", "/v1/sandboxes/sbx_nope")(lambda r: error_reply(404, "sandbox_not_found", "sandbox sbx_nope not found", {"id": "sbx_nope"}))
        with self.assertRaises(SandboxNotFoundError) as cm:
            Sandbox.connect("sbx_nope", api_url=self.server.url, api_key=KEY)
        e = cm.exception
        self.assertEqual((e.status, e.code, e.message, e.details), (404, "sandbox_not_found", "sandbox sbx_nope not found", {"id": "sbx_nope"}))

    def test_non_json_error(self):
        self.route("GET", "/v1/health")(lambda r: (401, {"Content-Type": "text/plain"}, b"nope"))
        api = ApiClient(ConnectionConfig(api_url=self.server.url, api_key=KEY))
        with self.assertRaises(AuthenticationError) as cm:
            api.json("GET", "/v1/health")
        self.assertEqual(cm.exception.code, "http_401")

    def test_connection_failed_names_the_url(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        url = f"http://127.0.0.1:{port}"
        with self.assertRaises(SandboxError) as cm:
            Sandbox.create(api_url=url, api_key=KEY)
        self.assertEqual(cm.exception.code, "connection_failed")
        self.assertIn(url, str(cm.exception))
        self.assertIsNone(cm.exception.status)

    def test_request_timeout(self):
        release = threading.Event()
        self.addCleanup(release.set)

        @self.route("GET", "/v1/sandboxes/sbx_slow")
        def slow(r):
            release.wait(5)
            return json_reply(200, sandbox_json())

        t0 = time.monotonic()
        with self.assertRaises(NsTimeoutError) as cm:
            Sandbox.get_info("sbx_slow", api_url=self.server.url, api_key=KEY, request_timeout=0.3)
        self.assertEqual(cm.exception.code, "request_timeout")
        self.assertLess(time.monotonic() - t0, 3)

    def test_kill_class_and_instance(self):
        self.route("DELETE", f"/v1/sandboxes/{SBX}")(lambda r: (204, {}, b""))
        self.route("DELETE", "/v1/sandboxes/sbx_gone")(lambda r: error_reply(404, "sandbox_not_found"))
        self.assertIsNone(self.sandbox.kill())
        self.assertTrue(Sandbox.kill(SBX, api_url=self.server.url, api_key=KEY))
        self.assertFalse(Sandbox.kill("sbx_gone", api_url=self.server.url, api_key=KEY))
        self.assertEqual([r.method for r in self.server.requests], ["DELETE"] * 3)

    def test_context_manager_kills(self):
        self.route("DELETE", f"/v1/sandboxes/{SBX}")(lambda r: (204, {}, b""))
        with self.assertRaises(ZeroDivisionError):
            with self.sandbox as s:
                self.assertIs(s, self.sandbox)
                1 / 0
        self.assertEqual(self.server.requests[-1].method, "DELETE")

    def test_set_timeout(self):
        self.route("POST", f"/v1/sandboxes/{SBX}/timeout")(lambda r: json_reply(200, sandbox_json()))
        self.sandbox.set_timeout(60000)
        self.assertEqual(self.server.requests[-1].json(), {"timeoutMs": 60000})


class ListTest(HttpTestCase):
    def test_pages_and_query(self):
        pages = {None: ([1, 2], "tok1"), "tok1": ([3], None)}

        @self.route("GET", "/v1/sandboxes")
        def page(r: Request):
            token = r.query.get("nextToken", [None])[0]
            items, nxt = pages[token]
            return json_reply(200, {"sandboxes": [sandbox_json(i) for i in items], "nextToken": nxt})

        p = Sandbox.list({"metadata": {"team": "a b", "k": "v=w"}, "state": ["running", "paused"]}, limit=2, api_url=self.server.url, api_key=KEY)
        self.assertEqual(self.server.requests, [])
        ids = [s.sandbox_id for s in p]
        self.assertEqual(ids, [f"sbx_fake{i:012d}" for i in (1, 2, 3)])
        first, second = self.server.requests
        self.assertEqual(first.query, {"state": ["running,paused"], "metadata": ["team=a b", "k=v=w"], "limit": ["2"]})
        self.assertEqual(second.query["nextToken"], ["tok1"])

    def test_no_query(self):
        self.route("GET", "/v1/sandboxes")(lambda r: json_reply(200, {"sandboxes": [], "nextToken": None}))
        p = Sandbox.list(api_url=self.server.url, api_key=KEY)
        self.assertEqual(p.next_items(), [])
        self.assertFalse(p.has_next)
        self.assertEqual(self.server.requests[0].query, {})


class FilesTest(HttpTestCase):
    BASE = f"/v1/sandboxes/{SBX}/files"

    def setUp(self):
        super().setUp()
        self.stored = {}

        @self.route("PUT", self.BASE)
        def put(r: Request):
            path = r.query["path"][0]
            self.stored[path] = r.body
            return json_reply(200, {"path": path, "size": len(r.body)})

        @self.route("GET", self.BASE)
        def get(r: Request):
            path = r.query["path"][0]
            if path not in self.stored:
                return error_reply(404, "file_not_found", f"{path} not found", {"path": path})
            data = self.stored[path]
            return 200, {"Content-Type": "application/octet-stream"}, iter([data[i : i + 1000] for i in range(0, len(data), 1000)])

    def test_write_kinds(self):
        f = self.sandbox.files
        self.assertEqual(f.write("/w/a.txt", "héllo"), nullspace.WriteInfo("/w/a.txt", 6))
        req = self.server.requests[-1]
        self.assertEqual(req.headers["Content-Type"], "application/octet-stream")
        self.assertFalse(req.chunked)
        self.assertEqual(req.query, {"path": ["/w/a.txt"]})
        f.write("/w/b", b"\x00\x01", mode=0o755, append=True)
        self.assertEqual(self.server.requests[-1].query, {"path": ["/w/b"], "mode": ["493"], "append": ["true"]})
        # file-like objects and iterables are streamed chunked, never read whole
        data = bytes(range(256)) * 1024
        self.assertEqual(f.write("/w/c", io.BytesIO(data)).size, len(data))
        req = self.server.requests[-1]
        self.assertTrue(req.chunked)
        self.assertGreater(len(req.chunk_sizes), 1)
        self.assertLessEqual(max(req.chunk_sizes), 64 * 1024)
        self.assertEqual(self.stored["/w/c"], data)
        f.write("/w/d", (b"x" * 10 for _ in range(3)))
        self.assertTrue(self.server.requests[-1].chunked)
        self.assertEqual(self.stored["/w/d"], b"x" * 30)
        f.write("/w/e", io.StringIO("€uro"))
        self.assertEqual(self.stored["/w/e"], "€uro".encode())
        res = f.write([{"path": "/w/f", "data": "1"}, nullspace.WriteEntry("/w/g", b"22")])
        self.assertEqual(res, [nullspace.WriteInfo("/w/f", 1), nullspace.WriteInfo("/w/g", 2)])

    def test_failing_source_is_reraised(self):
        def gen():
            yield b"abc"
            raise ValueError("source broke")

        with self.assertRaisesRegex(ValueError, "source broke"):
            self.sandbox.files.write("/w/x", gen())

    def test_read_formats(self):
        data = "ünïcode\n".encode() * 500
        self.stored["/r"] = data
        f = self.sandbox.files
        self.assertEqual(f.read("/r"), data.decode())
        self.assertEqual(f.read("/r", format="bytes"), data)
        with f.read("/r", format="stream") as stream:
            chunks = list(stream)
        self.assertEqual(b"".join(chunks), data)
        with self.assertRaises(NsFileNotFoundError) as cm:
            f.read("/missing")
        self.assertEqual(cm.exception.details, {"path": "/missing"})
        with self.assertRaises(ValueError):
            f.read("/r", format="json")

    def test_body_cut_short(self):
        # a reply that announced more bytes than came before the connection closed is an error,
        # never a silently truncated file
        self.route("GET", self.BASE)(lambda r: (200, {"Content-Type": "application/octet-stream", "Content-Length": "1000"}, b"1234567"))
        with self.assertRaises(SandboxError) as cm:
            self.sandbox.files.read("/short", format="bytes")
        self.assertEqual(cm.exception.code, "connection_failed")
        self.assertIn("7 of 1000 bytes", str(cm.exception))

    def test_fs_operations(self):
        entry = {"name": "d", "path": "/w/d", "type": "dir", "size": 4096, "mode": 0o755, "mtimeMs": 1700000000123.5}
        self.route("GET", self.BASE + "/list")(lambda r: json_reply(200, {"entries": [entry, dict(entry, name="l", path="/w/l", type="symlink", symlinkTarget="/x")]}))
        self.route("GET", self.BASE + "/stat")(lambda r: json_reply(200, entry) if r.query["path"] == ["/w/d"] else error_reply(404, "file_not_found"))
        self.route("POST", self.BASE + "/mkdir")(lambda r: json_reply(200, {"created": True}))
        self.route("POST", self.BASE + "/rename")(lambda r: (204, {}, b""))
        self.route("DELETE", self.BASE)(lambda r: (204, {}, b""))
        f = self.sandbox.files
        entries = f.list("/w", depth=2)
        self.assertEqual(self.server.requests[-1].query, {"path": ["/w"], "depth": ["2"]})
        self.assertEqual([e.type for e in entries], ["dir", "symlink"])
        self.assertEqual(entries[1].symlink_target, "/x")
        self.assertIsNone(entries[0].symlink_target)
        self.assertEqual(entries[0].modified_time.timestamp(), 1700000000.1235)
        self.assertTrue(f.exists("/w/d"))
        self.assertFalse(f.exists("/nope"))
        self.assertTrue(f.make_dir("/w/d"))
        self.assertEqual(self.server.requests[-1].json(), {"path": "/w/d", "parents": True})
        self.assertEqual(f.rename("/w/old", "/w/d").path, "/w/d")
        self.assertEqual(self.server.requests[-2].json(), {"from": "/w/old", "to": "/w/d"})
        f.remove("/w/d")
        self.assertEqual(self.server.requests[-1].query, {"path": ["/w/d"], "recursive": ["true"]})


class CommandsTest(HttpTestCase):
    BASE = f"/v1/sandboxes/{SBX}/commands"

    def test_run_foreground(self):
        @self.route("POST", self.BASE)
        def run(r: Request):
            return 200, {"Content-Type": "application/x-ndjson"}, iter(
                [
                    ndjson({"type": "start", "pid": 3}, out("stdout", "é".encode()[:1])),
                    ndjson(out("stdout", "é".encode()[1:] + b"\n"), out("stderr", b"err")),
                    ndjson({"type": "end", "pid": 3, "exitCode": 1, "signal": None, "timedOut": False}),
                ]
            )

        pieces = []
        r = self.sandbox.commands.run("false", cwd="/tmp", envs={"A": "1"}, timeout_ms=0, on_stdout=pieces.append)
        self.assertEqual(r, CommandResult(pid=3, exit_code=1, signal=None, stdout="é\n", stderr="err", timed_out=False))
        self.assertEqual(pieces, ["é\n"])
        self.assertEqual(self.server.requests[-1].json(), {"cmd": "false", "background": False, "cwd": "/tmp", "envs": {"A": "1"}, "timeoutMs": 0})

    def test_callback_fires_before_the_end(self):
        got_first = threading.Event()

        @self.route("POST", self.BASE)
        def run(r: Request):
            def body():
                yield ndjson({"type": "start", "pid": 4}, out("stdout", b"first\n"))
                live = got_first.wait(5)
                yield ndjson(out("stdout", b"live\n" if live else b"late\n"), {"type": "end", "pid": 4, "exitCode": 0, "signal": None, "timedOut": False})

            return 200, {"Content-Type": "application/x-ndjson"}, body()

        r = self.sandbox.commands.run("x", on_stdout=lambda s: got_first.set())
        self.assertEqual(r.stdout, "first\nlive\n")

    def test_validation_error_before_stream(self):
        self.route("POST", self.BASE)(lambda r: error_reply(400, "validation_failed", "user must match pattern", {"field": "user"}))
        with self.assertRaises(InvalidArgumentError) as cm:
            self.sandbox.commands.run("x", user="Bad User")
        self.assertEqual(cm.exception.details, {"field": "user"})

    def test_background_handle(self):
        release = threading.Event()
        self.addCleanup(release.set)
        self.route("POST", self.BASE)(lambda r: json_reply(201, {"pid": 77}))

        @self.route("GET", self.BASE + "/77/stream")
        def stream(r: Request):
            def body():
                yield ndjson({"type": "start", "pid": 77}, out("stdout", b"tick\n"))
                release.wait(5)
                yield ndjson({"type": "end", "pid": 77, "exitCode": None, "signal": "SIGTERM", "timedOut": False})

            return 200, {"Content-Type": "application/x-ndjson"}, body()

        @self.route("POST", self.BASE + "/77/kill")
        def kill(r: Request):
            release.set()
            return 204, {}, b""

        self.route("POST", self.BASE + "/77/stdin")(lambda r: (204, {}, b""))
        seen = threading.Event()
        h = self.sandbox.commands.run("loop", background=True, stdin=True, on_stdout=lambda s: seen.set())
        self.assertEqual(self.server.requests[0].json(), {"cmd": "loop", "background": True, "stdin": True})
        self.assertEqual(h.pid, 77)
        self.assertTrue(seen.wait(5), "callback fired while the command runs")
        [attach] = [r for r in self.server.requests if r.path.endswith("/77/stream")]
        self.assertEqual(attach.query, {"replay": ["true"]})
        self.assertEqual(h.stdout, "tick\n")
        h.send_stdin("hi", close=True)
        self.assertEqual(self.server.requests[-1].json(), {"data": "hi", "close": True})
        self.assertTrue(h.kill("SIGTERM"))
        self.assertEqual(self.server.requests[-1].json(), {"signal": "SIGTERM"})
        r = h.wait()
        self.assertEqual((r.pid, r.exit_code, r.signal, r.stdout), (77, None, "SIGTERM", "tick\n"))
        self.assertIs(h.wait(), r)

    def test_kill_missing_process_and_connect(self):
        self.route("POST", self.BASE + "/5/kill")(lambda r: error_reply(404, "process_not_found"))
        self.route("POST", self.BASE + "/6/kill")(lambda r: error_reply(409, "process_not_running"))
        self.route("GET", self.BASE)(lambda r: json_reply(200, {"processes": []}))
        self.assertFalse(self.sandbox.commands.kill(5))
        self.assertFalse(self.sandbox.commands.kill(6))
        with self.assertRaises(ProcessNotFoundError):
            self.sandbox.commands.connect(5)

    def test_background_returns_before_the_stream_starts(self):
        # the real server sends the stream's headers only with the process's first output
        release = threading.Event()
        self.addCleanup(release.set)
        self.route("POST", self.BASE)(lambda r: json_reply(201, {"pid": 8}))
        self.route("GET", self.BASE)(lambda r: json_reply(200, {"processes": [{"pid": 8, "cmd": "sleep 9", "cwd": "/", "tag": "", "startedAtMs": 0, "running": True, "exitCode": None, "signal": None, "timedOut": False}]}))

        @self.route("GET", self.BASE + "/8/stream")
        def stream(r: Request):
            release.wait(5)  # nothing at all (not even headers) before the process ends
            return 200, {"Content-Type": "application/x-ndjson"}, ndjson({"type": "end", "pid": 8, "exitCode": 0, "signal": None, "timedOut": False})

        for start in (lambda: self.sandbox.commands.run("sleep 9", background=True), lambda: self.sandbox.commands.connect(8)):
            t0 = time.monotonic()
            h = start()
            self.assertLess(time.monotonic() - t0, 2)
            self.assertEqual(h.stdout, "")
        release.set()
        self.assertEqual(h.wait().exit_code, 0)

    def test_list(self):
        self.route("GET", self.BASE)(
            lambda r: json_reply(200, {"processes": [{"pid": 2, "cmd": "sleep 9", "cwd": "/workspace", "tag": "t", "startedAtMs": 1700000000000, "running": True, "exitCode": None, "signal": None, "timedOut": False}]})
        )
        [p] = self.sandbox.commands.list()
        self.assertEqual((p.pid, p.cmd, p.tag, p.running), (2, "sleep 9", "t", True))
        self.assertEqual(p.started_at.year, 2023)


if __name__ == "__main__":
    unittest.main()
