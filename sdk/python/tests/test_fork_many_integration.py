"""N-way fork, metrics and lifecycle events against a real server (skipped without NULLSPACE_TEST_API_URL)."""

import contextlib
import io
import os
import time
import unittest
from datetime import datetime, timezone

from nullspace import InvalidArgumentError, Sandbox, SandboxMetrics
from _live import CONN, KEY, URL, needs_server
from _snippets import SNIPPET_FORK_MANY


@needs_server
class ForkManyTest(unittest.TestCase):
    def test_fork_count(self):
        src = Sandbox.create(template="base", **CONN)
        self.addCleanup(src.kill)
        src.files.write("/workspace/data", "payload")
        children = src.fork(count=3)
        for c in children:
            self.addCleanup(c.kill)
        self.assertEqual(len(children), 3)
        self.assertEqual(len({c.sandbox_id for c in children}), 3)
        infos = [c.get_info() for c in children]
        self.assertEqual({i.forked_from for i in infos}, {src.sandbox_id})
        # one capture for all of them
        self.assertEqual(len({i.snapshot_id for i in infos}), 1)
        hostnames = {c.commands.run("hostname").stdout.strip() for c in children}
        self.assertEqual(hostnames, {c.sandbox_id for c in children})
        for c in children:
            self.assertEqual(c.files.read("/workspace/data"), "payload")
        # without count: one sandbox, as before
        one = src.fork()
        self.addCleanup(one.kill)
        self.assertIsInstance(one, Sandbox)
        with self.assertRaises(InvalidArgumentError):
            src.fork(count=0)
        # the source's events: created, then one forked per fork request
        kinds = []
        for e in src.events(last_event_id=0):
            kinds.append(e.type)
            if kinds.count("forked") == 2:
                break
        self.assertEqual(kinds, ["created", "forked", "forked"])

    def test_get_metrics(self):
        sbx = Sandbox.create(template="base", **CONN)
        self.addCleanup(sbx.kill)
        started = datetime.now(timezone.utc)
        deadline = time.time() + 90
        samples = []
        while time.time() < deadline and not samples:
            samples = sbx.get_metrics()
            time.sleep(1)
        self.assertTrue(samples, "no metrics sample within 90 s")
        m = samples[-1]
        self.assertIsInstance(m, SandboxMetrics)
        self.assertGreater(m.mem_total_bytes, 0)
        self.assertGreater(m.mem_used_bytes, 0)
        self.assertLess(m.mem_used_bytes, m.mem_total_bytes)
        self.assertGreaterEqual(m.cpu_used_pct, 0)
        self.assertGreater(m.disk_total_bytes, 0)
        self.assertGreaterEqual(m.timestamp, started)
        # a window after the last sample holds none of the earlier ones
        later = sbx.get_metrics(start=m.timestamp)
        self.assertTrue(all(x.timestamp >= m.timestamp for x in later))
        self.assertEqual(sbx.get_metrics(start=0, end=1), [])

    def test_readme_snippet_runs_as_written(self):
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir, "README.md")
        with open(readme, encoding="utf-8") as f:
            self.assertIn(f"```python\n{SNIPPET_FORK_MANY}```\n", f.read())
        env = {"NULLSPACE_API_URL": URL, "NULLSPACE_API_KEY": KEY}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(SNIPPET_FORK_MANY, "<README>", "exec"), {})
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        lines = out.getvalue().splitlines()
        self.assertEqual(len([x for x in lines if x.startswith("sbx_")]), 3)
        self.assertTrue(lines[-1].split()[1] == "forked", lines)


if __name__ == "__main__":
    unittest.main()
