"""Shared volumes against a real server (skipped without NULLSPACE_TEST_API_URL)."""

import secrets
import unittest

from nullspace import ConflictError, InvalidArgumentError, Sandbox, Snapshot, Volume, VolumeNotFoundError
from _live import CONN, needs_server


@needs_server
class VolumeTest(unittest.TestCase):
    def test_share_and_manage(self):
        name = "py-" + secrets.token_hex(4)
        vol = Volume.create(name, **CONN)
        self.addCleanup(Volume.delete, name, **CONN)
        self.assertEqual(vol.name, name)
        a = Sandbox.create(template="base", volumes={"/mnt/data": name}, **CONN)
        self.addCleanup(a.kill)
        b = Sandbox.create(template="base", volumes={"/data": name}, **CONN)
        self.addCleanup(b.kill)
        self.assertEqual(a.get_info().volumes, {"/mnt/data": name})
        a.files.write("/mnt/data/hello.txt", "from a\n")
        self.assertEqual(b.files.read("/data/hello.txt"), "from a\n")
        self.assertEqual(sorted(Volume.get(name, **CONN).mounted_by), sorted([a.sandbox_id, b.sandbox_id]))
        with self.assertRaises(ConflictError) as ctx:
            Volume.delete(name, **CONN)
        self.assertEqual(ctx.exception.code, "volume_in_use")
        self.assertIn(name, [v.name for v in Volume.list(**CONN)])
        # a snapshot records which volumes it mounts (never their content)
        snap = a.create_snapshot()
        self.addCleanup(snap.delete)
        self.assertEqual(snap.volumes, {"/mnt/data": name})
        self.assertEqual(Snapshot.get(snap.id, **CONN).volumes, {"/mnt/data": name})

    def test_bad_names(self):
        for bad in ["../x", "", "x" * 300]:
            with self.assertRaises(InvalidArgumentError):
                Volume.create(bad, **CONN)
        with self.assertRaises(VolumeNotFoundError):
            Volume.get("no-such-volume", **CONN)
        self.assertFalse(Volume.delete("no-such-volume", **CONN))


if __name__ == "__main__":
    unittest.main()
