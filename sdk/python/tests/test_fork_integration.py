"""Fork against a real server (skipped without NULLSPACE_TEST_API_URL)."""

import unittest

from nullspace import Sandbox, SandboxNotRunningError
from _live import KEY, URL, needs_server


@needs_server
class ForkTest(unittest.TestCase):
    def test_fork_gives_an_independent_live_child(self):
        source = Sandbox.create(api_url=URL, api_key=KEY, metadata={"suite": "python-fork"})
        self.addCleanup(source.kill)
        source.files.write("/workspace/state.txt", "baseline\n")
        source.commands.run("sleep 300", background=True, timeout_ms=0)
        child = source.fork()
        self.addCleanup(child.kill)
        info = child.get_info()
        self.assertEqual(info.forked_from, source.sandbox_id)
        self.assertEqual(info.metadata, {"suite": "python-fork"})
        self.assertEqual(child.files.read("/workspace/state.txt"), "baseline\n")
        self.assertIn("sleep 300", [p.cmd for p in child.commands.list() if p.running])
        child.files.write("/workspace/state.txt", "child\n")
        self.assertEqual(source.files.read("/workspace/state.txt"), "baseline\n")
        self.assertEqual(source.get_info().state, "running")

    def test_fork_of_a_killed_sandbox_is_refused(self):
        s = Sandbox.create(api_url=URL, api_key=KEY)
        s.kill()
        with self.assertRaises(SandboxNotRunningError) as ctx:
            s.fork()
        self.assertEqual(ctx.exception.code, "sandbox_not_running")


if __name__ == "__main__":
    unittest.main()
