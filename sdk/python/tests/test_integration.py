"""Integration tests against a real nullspace server (real VMs).

Set NULLSPACE_TEST_API_URL (and NULLSPACE_TEST_API_KEY) to run them; the module is skipped
otherwise. Every sandbox created here is killed in a cleanup, even when a test fails. The number
of sandboxes is kept small: one per TestCase class where sharing does not weaken a test.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import threading
import time
import unittest
import uuid
from datetime import datetime, timedelta, timezone
from unittest import mock

API_URL = os.environ.get("NULLSPACE_TEST_API_URL")
API_KEY = os.environ.get("NULLSPACE_TEST_API_KEY")

if not API_URL:
    raise unittest.SkipTest("integration tests need a real server: set NULLSPACE_TEST_API_URL (and NULLSPACE_TEST_API_KEY)")

import nullspace  # noqa: E402
from nullspace import (  # noqa: E402
    AuthenticationError,
    CommandResult,
    EntryInfo,
    InvalidArgumentError,
    ProcessNotFoundError,
    Sandbox,
    SandboxNotFoundError,
    SandboxNotRunningError,
    TemplateNotFoundError,
    WriteInfo,
)
from nullspace import FileNotFoundError as NsFileNotFoundError  # noqa: E402
from nullspace import TimeoutError as NsTimeoutError  # noqa: E402

CONN = {"api_url": API_URL, "api_key": API_KEY}
RUN_ID = uuid.uuid4().hex[:12]
"""Metadata value marking this run's sandboxes (sandboxes of other runs may exist on the server)."""

SNIPPET = """\
from nullspace import Sandbox
sandbox = Sandbox.create(template="base")
sandbox.files.write("/workspace/state.txt", "baseline\\n")
print(sandbox.files.read("/workspace/state.txt"))
print(sandbox.commands.run("python3 -c 'print(6*7)'").stdout)
sandbox.kill()
"""


def kill_quietly(sandbox: Sandbox) -> None:
    try:
        sandbox.kill()
    except Exception as e:  # a cleanup must not hide the test's own failure
        print(f"warning: could not kill {sandbox.sandbox_id}: {e!r}", file=sys.stderr)


def create(test: type[unittest.TestCase] | unittest.TestCase, **kwargs) -> Sandbox:
    """Creates a sandbox marked with this run's id and registers its kill as a cleanup."""
    metadata = {"suite": "pysdk", "run": RUN_ID, **kwargs.pop("metadata", {})}
    sandbox = Sandbox.create(metadata=metadata, **CONN, **kwargs)
    if isinstance(test, type):
        test.addClassCleanup(kill_quietly, sandbox)
    else:
        test.addCleanup(kill_quietly, sandbox)
    return sandbox


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class SnippetTest(unittest.TestCase):
    """The documentation's snippet, verbatim, configured through the environment."""

    def test_documented_snippet(self):
        created: list[Sandbox] = []
        real_create = Sandbox.create.__func__  # type: ignore[attr-defined]

        def recording_create(cls, *args, **kwargs):
            sandbox = real_create(cls, *args, **kwargs)
            created.append(sandbox)
            self.addCleanup(kill_quietly, sandbox)  # killed even if the snippet fails half-way
            return sandbox

        env = {"NULLSPACE_API_URL": API_URL}
        if API_KEY:
            env["NULLSPACE_API_KEY"] = API_KEY
        out = io.StringIO()
        with mock.patch.dict(os.environ, env), mock.patch.object(Sandbox, "create", classmethod(recording_create)):
            with contextlib.redirect_stdout(out):
                exec(compile(SNIPPET, "<snippet>", "exec"), {})
        self.assertEqual(out.getvalue(), "baseline\n\n42\n\n")
        self.assertEqual(len(created), 1)
        info = Sandbox.get_info(created[0].sandbox_id, **CONN)
        self.assertIn(info.state, ("killing", "killed"))


class FilesTest(unittest.TestCase):
    sandbox: Sandbox

    @classmethod
    def setUpClass(cls):
        cls.sandbox = create(cls)
        cls.files = cls.sandbox.files

    def path(self, name: str) -> str:
        return f"/workspace/{self._testMethodName}/{name}"

    def test_text_and_bytes(self):
        text = "héllo wörld €😀\nline 2\n"
        info = self.files.write(self.path("t.txt"), text)
        self.assertEqual(info, WriteInfo(self.path("t.txt"), len(text.encode())))
        self.assertEqual(self.files.read(self.path("t.txt")), text)
        self.assertEqual(self.files.read(self.path("t.txt"), format="bytes"), text.encode())
        raw = bytes(range(256)) * 4 + b"\xff\xfe\x00"
        self.files.write(self.path("b.bin"), raw)
        self.assertEqual(self.files.read(self.path("b.bin"), format="bytes"), raw)
        self.files.write(self.path("empty"), b"")
        self.assertEqual(self.files.read(self.path("empty")), "")
        # the command sees the same bytes
        r = self.sandbox.commands.run(f"sha256sum {self.path('b.bin')}")
        self.assertEqual(r.stdout.split()[0], hashlib.sha256(raw).hexdigest())

    def test_append_mode_and_multi_write(self):
        p = self.path("log.txt")
        self.files.write(p, "a\n")
        info = self.files.write(p, "b\n", append=True)
        self.assertEqual(info, WriteInfo(p, 2))  # bytes written by this call
        self.assertEqual(self.files.read(p), "a\nb\n")
        self.assertEqual(self.files.get_info(p).size, 4)
        self.files.write(self.path("run.sh"), "#!/bin/sh\necho ran\n", mode=0o755)
        self.assertEqual(self.files.get_info(self.path("run.sh")).mode & 0o777, 0o755)
        self.assertEqual(self.sandbox.commands.run(self.path("run.sh")).stdout, "ran\n")
        res = self.files.write([{"path": self.path("m1"), "data": "one"}, nullspace.WriteEntry(self.path("m2"), b"two!")])
        self.assertEqual(res, [WriteInfo(self.path("m1"), 3), WriteInfo(self.path("m2"), 4)])
        self.assertEqual(self.files.read(self.path("m2")), "two!")

    def test_3mib_streamed_round_trip(self):
        data = os.urandom(3 * 1024 * 1024)
        digest = hashlib.sha256(data).hexdigest()
        reads: list[int] = []

        class Source(io.RawIOBase):
            """A file-like object that records how it is read (must be in chunks, not whole)."""

            def __init__(self) -> None:
                self.inner = io.BytesIO(data)

            def readable(self) -> bool:
                return True

            def read(self, n: int = -1) -> bytes:
                reads.append(n)
                return self.inner.read(n)

        p = self.path("big.bin")
        info = self.files.write(p, Source())
        self.assertEqual(info.size, len(data))
        self.assertGreater(len(reads), 10)
        self.assertTrue(all(0 < n <= 1024 * 1024 for n in reads), reads[:5])
        h = hashlib.sha256()
        chunks = 0
        with self.files.read(p, format="stream") as stream:
            for chunk in stream:
                self.assertIsInstance(chunk, bytes)
                h.update(chunk)
                chunks += 1
        self.assertEqual(h.hexdigest(), digest)
        self.assertGreater(chunks, 1)
        self.assertEqual(self.sandbox.commands.run(f"sha256sum {p}").stdout.split()[0], digest)
        self.assertEqual(self.files.get_info(p).size, len(data))

    def test_directory_operations(self):
        d = self.path("dir")
        self.assertFalse(self.files.exists(d))
        self.assertTrue(self.files.make_dir(d + "/sub/deeper"))
        self.assertFalse(self.files.make_dir(d + "/sub/deeper"))
        self.assertTrue(self.files.exists(d + "/sub"))
        self.files.write(d + "/a.txt", "A")
        self.sandbox.commands.run(f"ln -s a.txt {d}/link")

        names = sorted(e.name for e in self.files.list(d))
        self.assertEqual(names, ["a.txt", "link", "sub"])
        by_name = {e.name: e for e in self.files.list(d)}
        self.assertIsInstance(by_name["a.txt"], EntryInfo)
        self.assertEqual((by_name["a.txt"].type, by_name["a.txt"].size, by_name["a.txt"].path), ("file", 1, d + "/a.txt"))
        self.assertEqual(by_name["sub"].type, "dir")
        self.assertEqual((by_name["link"].type, by_name["link"].symlink_target), ("symlink", "a.txt"))
        mtime = by_name["a.txt"].modified_time
        self.assertIsNotNone(mtime.tzinfo)
        self.assertLess(abs(mtime - datetime.now(timezone.utc)), timedelta(hours=1))
        deep = {e.path for e in self.files.list(d, depth=3)}
        self.assertIn(d + "/sub/deeper", deep)
        self.assertNotIn(d + "/sub/deeper", {e.path for e in self.files.list(d)})

        info = self.files.get_info(d + "/a.txt")
        self.assertEqual((info.name, info.type, info.size), ("a.txt", "file", 1))
        moved = self.files.rename(d + "/a.txt", d + "/sub/b.txt")
        self.assertEqual((moved.path, moved.name, moved.type), (d + "/sub/b.txt", "b.txt", "file"))
        self.assertFalse(self.files.exists(d + "/a.txt"))
        self.assertEqual(self.files.read(d + "/sub/b.txt"), "A")

        self.files.remove(d + "/sub/b.txt")
        self.assertFalse(self.files.exists(d + "/sub/b.txt"))
        self.files.remove(d)  # recursive by default
        self.assertFalse(self.files.exists(d))

    def test_missing_file(self):
        missing = self.path("nope/missing.txt")
        with self.assertRaises(NsFileNotFoundError) as cm:
            self.files.read(missing)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "file_not_found"))
        with self.assertRaises(NsFileNotFoundError):
            self.files.read(missing, format="stream")
        with self.assertRaises(NsFileNotFoundError):
            self.files.get_info(missing)
        with self.assertRaises(NsFileNotFoundError):
            self.files.list(self.path("nope"))
        self.assertFalse(self.files.exists(missing))

    def test_invalid_path(self):
        with self.assertRaises(InvalidArgumentError):
            self.files.read("relative/path")


class CommandsTest(unittest.TestCase):
    sandbox: Sandbox

    @classmethod
    def setUpClass(cls):
        cls.sandbox = create(cls, envs={"SANDBOX_WIDE": "from-create"})
        cls.commands = cls.sandbox.commands

    def test_exit_codes_and_stderr(self):
        r = self.commands.run("echo out; echo err >&2; exit 3")
        self.assertIsInstance(r, CommandResult)
        self.assertEqual((r.exit_code, r.signal, r.timed_out), (3, None, False))
        self.assertEqual((r.stdout, r.stderr), ("out\n", "err\n"))
        self.assertGreater(r.pid, 0)
        self.assertEqual(self.commands.run("true").exit_code, 0)
        self.assertEqual(self.commands.run("false").exit_code, 1)
        self.assertEqual(self.commands.run("kill -TERM $$").signal, "SIGTERM")

    def test_cwd_envs_input_user(self):
        r = self.commands.run('pwd; echo "$FOO $SANDBOX_WIDE"', cwd="/tmp", envs={"FOO": "bar baz"})
        self.assertEqual(r.stdout, "/tmp\nbar baz from-create\n")
        self.assertEqual(self.commands.run("pwd").stdout, "/workspace\n")
        self.assertEqual(self.commands.run("cat", input="piped ✓").stdout, "piped ✓")
        self.assertEqual(self.commands.run("id -u").stdout, "0\n")

    def test_unicode_output(self):
        r = self.commands.run("python3 -c \"import sys; sys.stdout.write('é€😀' * 20000)\"")
        self.assertEqual(r.stdout, "é€😀" * 20000)

    def test_on_stdout_receives_output_while_running(self):
        arrivals: list[tuple[float, str]] = []
        errs: list[str] = []
        r = self.commands.run(
            "echo first; sleep 2; echo second; echo oops >&2",
            on_stdout=lambda s: arrivals.append((time.monotonic(), s)),
            on_stderr=errs.append,
        )
        end = time.monotonic()
        self.assertEqual("".join(s for _, s in arrivals), "first\nsecond\n")
        self.assertEqual(arrivals[0][1], "first\n")
        self.assertGreater(end - arrivals[0][0], 1.0, "the first line arrived only at the end")
        self.assertEqual("".join(errs), "oops\n")
        self.assertEqual(r.stdout, "first\nsecond\n")

    def test_timeout_raises_with_result(self):
        t0 = time.monotonic()
        with self.assertRaises(NsTimeoutError) as cm:
            self.commands.run("echo started; sleep 30; echo never", timeout_ms=1500)
        self.assertLess(time.monotonic() - t0, 20)
        e = cm.exception
        self.assertEqual(e.code, "command_timeout")
        self.assertIsInstance(e.result, CommandResult)
        self.assertTrue(e.result.timed_out)
        self.assertEqual(e.result.stdout, "started\n")

    def test_background_wait(self):
        h = self.commands.run("echo bg; sleep 0.5; echo bg2 >&2; exit 4", background=True, tag="bg-wait")
        self.assertGreater(h.pid, 0)
        r = h.wait()
        self.assertEqual((r.pid, r.exit_code, r.stdout, r.stderr), (h.pid, 4, "bg\n", "bg2\n"))
        self.assertEqual((h.stdout, h.stderr), ("bg\n", "bg2\n"))
        procs = {p.pid: p for p in self.commands.list()}
        self.assertIn(h.pid, procs)
        p = procs[h.pid]
        self.assertEqual((p.tag, p.running, p.exit_code), ("bg-wait", False, 4))
        # following it again replays its output
        again = self.commands.connect(h.pid).wait()
        self.assertEqual((again.exit_code, again.stdout), (4, "bg\n"))

    def test_background_kill_and_live_callback(self):
        seen = threading.Event()
        h = self.commands.run("echo ready; sleep 120", background=True, on_stdout=lambda s: seen.set())
        self.addCleanup(self.commands.kill, h.pid)
        self.assertTrue(seen.wait(20), "callback of a background command did not fire while it runs")
        self.assertEqual(h.stdout, "ready\n")
        running = [p for p in self.commands.list() if p.pid == h.pid]
        self.assertTrue(running and running[0].running)
        self.assertTrue(h.kill())
        r = h.wait()
        self.assertEqual((r.exit_code, r.signal, r.timed_out), (-1, "SIGKILL", False))  # -1: ended by a signal
        self.assertFalse(h.kill())  # no longer running
        self.assertFalse(self.commands.kill(999999))

    def test_send_stdin_to_cat(self):
        h = self.commands.run("cat", background=True, stdin=True, timeout_ms=60000)
        self.addCleanup(self.commands.kill, h.pid)
        h.send_stdin("hello\n")
        self.assertTrue(wait_for(lambda: h.stdout == "hello\n"), h.stdout)
        self.commands.send_stdin(h.pid, "wörld\n", close=True)
        r = h.wait()
        self.assertEqual((r.exit_code, r.stdout), (0, "hello\nwörld\n"))

    def test_unknown_process(self):
        with self.assertRaises(ProcessNotFoundError):
            self.commands.connect(999999)
        with self.assertRaises(ProcessNotFoundError):
            self.commands.send_stdin(999999, "x")


class LifecycleTest(unittest.TestCase):
    def test_list_info_timeout_and_kill(self):
        tag = uuid.uuid4().hex[:8]
        a = create(self, metadata={"case": tag})
        b = create(self, metadata={"case": tag})
        query = {"metadata": {"run": RUN_ID, "case": tag}}

        # every page, one sandbox per page, oldest first
        pages = Sandbox.list(query, limit=1, **CONN)
        first = pages.next_items()
        self.assertEqual([s.sandbox_id for s in first], [a.sandbox_id])
        self.assertTrue(pages.has_next)
        self.assertIsNotNone(pages.next_token)
        self.assertEqual([s.sandbox_id for s in Sandbox.list(query, limit=1, **CONN)], [a.sandbox_id, b.sandbox_id])
        self.assertEqual(list(Sandbox.list({"metadata": {"run": RUN_ID, "case": "other"}}, **CONN)), [])
        self.assertEqual(list(Sandbox.list({**query, "state": ["paused"]}, **CONN)), [])

        info = a.get_info()
        self.assertEqual((info.sandbox_id, info.template, info.state), (a.sandbox_id, "base", "running"))
        self.assertEqual(info.metadata, {"suite": "pysdk", "run": RUN_ID, "case": tag})
        self.assertGreater(info.memory_mib, 0)
        self.assertGreater(info.vcpus, 0)
        self.assertTrue(info.allow_internet_access)
        self.assertIsNotNone(info.created_at.tzinfo)
        self.assertIsNotNone(info.expires_at)
        self.assertTrue(a.is_running())
        a.set_timeout(600_000)
        after = Sandbox.get_info(a.sandbox_id, **CONN)
        self.assertEqual(after.timeout_ms, 600_000)
        self.assertGreater(after.expires_at, info.expires_at)
        self.assertEqual(Sandbox.connect(a.sandbox_id, **CONN).sandbox_id, a.sandbox_id)

        # kill: instance and class forms; twice is harmless
        self.assertIsNone(a.kill())
        a.kill()
        self.assertTrue(Sandbox.kill(a.sandbox_id, **CONN))
        self.assertFalse(a.is_running())
        self.assertIn(a.get_info().state, ("killing", "killed"))
        self.assertIn(a.sandbox_id, [s.sandbox_id for s in Sandbox.list({**query, "state": ["killing", "killed"]}, **CONN)])
        self.assertEqual([s.sandbox_id for s in Sandbox.list(query, **CONN)], [b.sandbox_id])
        with self.assertRaises(SandboxNotRunningError) as cm:
            a.files.read("/workspace/x")
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "sandbox_not_running"))
        with self.assertRaises(SandboxNotRunningError):
            a.files.write("/workspace/x", "data")
        with self.assertRaises(SandboxNotRunningError):
            a.files.list("/workspace")
        with self.assertRaises(SandboxNotRunningError):
            a.commands.run("true")
        with self.assertRaises(SandboxNotRunningError):
            a.set_timeout(60_000)

        with b:  # the context manager kills on exit
            self.assertEqual(b.commands.run("echo in-with").stdout, "in-with\n")
        self.assertIn(Sandbox.get_info(b.sandbox_id, **CONN).state, ("killing", "killed"))

    def test_unknown_sandbox(self):
        missing = "sbx_doesnotexist0000"
        with self.assertRaises(SandboxNotFoundError) as cm:
            Sandbox.get_info(missing, **CONN)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "sandbox_not_found"))
        with self.assertRaises(SandboxNotFoundError):
            Sandbox.connect(missing, **CONN)
        self.assertFalse(Sandbox.kill(missing, **CONN))

    def test_wrong_key(self):
        with self.assertRaises(AuthenticationError) as cm:
            Sandbox.list(api_url=API_URL, api_key="wrong-key").next_items()
        self.assertEqual((cm.exception.status, cm.exception.code), (401, "unauthorized"))
        with self.assertRaises(AuthenticationError):
            Sandbox.create(api_url=API_URL, api_key="wrong-key")

    def test_unknown_template(self):
        with self.assertRaises(TemplateNotFoundError):
            s = Sandbox.create("no-such-template", **CONN)
            self.addCleanup(kill_quietly, s)  # only reached if the server wrongly accepted it


if __name__ == "__main__":
    unittest.main()
