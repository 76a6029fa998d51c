"""Hibernate / resume against a real server (skipped without NULLSPACE_TEST_API_URL)."""

import unittest

from nullspace import ConflictError, InvalidArgumentError, Sandbox, Snapshot
from _live import CONN, needs_server


@needs_server
class HibernateTest(unittest.TestCase):
    def test_hibernate_resume_connect_and_lineage(self):
        sandbox = Sandbox.create(metadata={"suite": "python-hibernate"}, **CONN)
        self.addCleanup(sandbox.kill)
        sandbox.files.write("/workspace/state.txt", "baseline\n")
        h1 = sandbox.hibernate()
        self.assertEqual((h1.kind, h1.sandbox_id), ("hibernate", sandbox.sandbox_id))
        info = sandbox.get_info()
        self.assertEqual(info.state, "paused")
        self.assertIsNotNone(info.remaining_timeout_ms)
        resumed = Sandbox.resume(h1.id, **CONN)
        self.assertEqual(resumed.sandbox_id, sandbox.sandbox_id)
        self.assertEqual(sandbox.files.read("/workspace/state.txt"), "baseline\n")
        sandbox.files.write("/workspace/state.txt", "second\n")
        h2 = sandbox.pause()
        with self.assertRaises(ConflictError) as ctx:
            Sandbox.resume(h1.id, **CONN)
        self.assertEqual(ctx.exception.code, "snapshot_not_latest")
        again = Sandbox.connect(sandbox.sandbox_id, **CONN)
        self.assertEqual(again.files.read("/workspace/state.txt"), "second\n")
        self.assertEqual(again.get_info().state, "running")
        reusable = sandbox.create_snapshot()
        self.addCleanup(Snapshot.delete, reusable.id, **CONN)
        with self.assertRaises(InvalidArgumentError):
            Sandbox.resume(reusable.id, **CONN)
        self.assertIn(h2.id, [s.id for s in Snapshot.list(sandbox_id=sandbox.sandbox_id, kind="hibernate", **CONN)])

    def test_on_timeout_hibernate(self):
        sandbox = Sandbox.create(timeout_ms=2000, lifecycle={"on_timeout": "hibernate"}, **CONN)
        self.addCleanup(sandbox.kill)
        sandbox.files.write("/workspace/keep", "kept")
        import time

        deadline = time.time() + 30
        while sandbox.get_info().state != "paused":
            self.assertLess(time.time(), deadline, "the timeout did not hibernate the sandbox")
            time.sleep(0.3)
        self.assertEqual(sandbox.get_info().on_timeout, "hibernate")
        back = Sandbox.connect(sandbox.sandbox_id, **CONN)
        self.assertEqual(back.files.read("/workspace/keep"), "kept")
        back.set_timeout(120_000)


if __name__ == "__main__":
    unittest.main()
