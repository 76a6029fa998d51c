"""Terminals and directory watches against a real server (skipped without NULLSPACE_TEST_API_URL)."""

import contextlib
import io
import os
import threading
import time
import unittest

from nullspace import FileNotFoundError, Sandbox, SandboxError
from _live import CONN, URL, KEY, needs_server
from _snippets import SNIPPET_TERMINAL, SNIPPET_WATCH


class Output:
    """The output of a terminal, and a wait for some text in it."""

    def __init__(self):
        self.data = b""
        self.lock = threading.Lock()

    def __call__(self, chunk):
        with self.lock:
            self.data += chunk

    def wait_for(self, text, timeout=60):
        deadline = time.time() + timeout
        while text.encode() not in self.data:
            if time.time() > deadline:
                raise AssertionError(f"the terminal never printed {text!r}; it printed {self.data[-2000:]!r}")
            time.sleep(0.1)


@needs_server
class TerminalTest(unittest.TestCase):
    def sandbox(self):
        sbx = Sandbox.create(template="base", **CONN)
        self.addCleanup(sbx.kill)
        return sbx

    def test_create_input_resize_reattach_wait(self):
        sbx = self.sandbox()
        out = Output()
        h = sbx.pty.create(cols=90, rows=20, on_data=out, envs={"GREETING": "hello"})
        self.addCleanup(sbx.pty.kill, h.pid)
        self.assertGreater(h.pid, 0)
        sbx.pty.send_input(h.pid, "echo $GREETING-$((20+22)); echo size=$(stty size)\n")
        out.wait_for("hello-42")
        out.wait_for("size=20 90")
        sbx.pty.resize(h.pid, cols=111, rows=33)
        h.send_input(b"echo cols=$(tput cols)\n")
        out.wait_for("\rcols=111\r\n")
        # away and back: what it printed meanwhile is replayed
        h.disconnect()
        with self.assertRaises(SandboxError) as ctx:
            h.wait()
        self.assertEqual(ctx.exception.code, "stream_ended")
        sbx.pty.send_input(h.pid, "echo away-$((3*3)); exit 4\n")
        again = Output()
        h2 = sbx.pty.connect(h.pid, on_data=again)
        self.assertEqual(h2.wait(timeout=120), 4)
        self.assertIn(b"away-9", again.data)
        self.assertFalse(sbx.pty.kill(h.pid))

    def test_watch_dir(self):
        sbx = self.sandbox()
        events, ended = [], []
        w = sbx.files.watch_dir("/workspace", events.append, recursive=True, on_exit=ended.append)
        sbx.files.write("/workspace/a.txt", "x")
        sbx.commands.run("mkdir -p /workspace/d/e && touch /workspace/d/e/f && rm /workspace/a.txt")
        deadline = time.time() + 60
        while not {("create", "d/e/f"), ("remove", "a.txt")} <= {(e.type, e.name) for e in events}:
            self.assertLess(time.time(), deadline, f"events: {events}")
            time.sleep(0.1)
        w.stop()
        w.wait()
        self.assertEqual(ended, [None])
        with self.assertRaises(FileNotFoundError):
            sbx.files.watch_dir("/no/such/dir", events.append)
        # the sandbox killed: the watch ends with the reason
        w2 = sbx.files.watch_dir("/workspace", lambda e: None)
        sbx.kill()
        with self.assertRaises(SandboxError) as ctx:
            w2.wait(timeout=60)
        self.assertEqual(ctx.exception.code, "sandbox_not_running")


@needs_server
class ReadmeTest(unittest.TestCase):
    """The README's terminal and watch snippets, verbatim, run against the server."""

    def run_snippet(self, snippet):
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir, "README.md")
        with open(readme, encoding="utf-8") as f:
            self.assertIn(f"```python\n{snippet}```\n", f.read())
        old = {k: os.environ.get(k) for k in ("NULLSPACE_API_URL", "NULLSPACE_API_KEY")}
        os.environ.update({"NULLSPACE_API_URL": URL, "NULLSPACE_API_KEY": KEY})
        try:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(snippet, "<README>", "exec"), {})
            return out.getvalue()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def test_terminal_snippet(self):
        out = self.run_snippet(SNIPPET_TERMINAL)
        self.assertRegex(out, r"\r42\r\n")  # (after the prompt's bracketed-paste sequence)
        self.assertTrue(out.endswith("exit code: 3\n"), out[-200:])

    def test_watch_snippet(self):
        out = self.run_snippet(SNIPPET_WATCH)
        self.assertIn("('create', 'logs')", out)
        self.assertIn("('create', 'logs/today.txt')", out)


if __name__ == "__main__":
    unittest.main()
