"""Reusable snapshots against a real nullspace server (real VMs).

Set NULLSPACE_TEST_API_URL (and NULLSPACE_TEST_API_KEY) to run them; the module is skipped
otherwise. Every sandbox created here is killed and every snapshot deleted in a cleanup, even
when a test fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import unittest
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from unittest import mock

API_URL = os.environ.get("NULLSPACE_TEST_API_URL")
API_KEY = os.environ.get("NULLSPACE_TEST_API_KEY")

if not API_URL:
    raise unittest.SkipTest("integration tests need a real server: set NULLSPACE_TEST_API_URL (and NULLSPACE_TEST_API_KEY)")

from nullspace import (  # noqa: E402
    Compatibility,
    ConflictError,
    InvalidArgumentError,
    Sandbox,
    SandboxNotRunningError,
    Snapshot,
    SnapshotNotFoundError,
)

from _snippets import SNIPPET_CHILDREN, SNIPPET_CREATE, SNIPPET_MANAGE  # noqa: E402

CONN = {"api_url": API_URL, "api_key": API_KEY}
RUN_ID = uuid.uuid4().hex[:12]
"""Metadata value marking this run's sandboxes and snapshots (others may exist on the server)."""

def quietly(what: str, fn: Callable[[], Any]) -> None:
    """Runs a cleanup step; a failure is printed, not raised (it must not hide the test's own)."""
    try:
        fn()
    except Exception as e:
        print(f"warning: could not {what}: {e!r}", file=sys.stderr)


def kill_later(test: unittest.TestCase, sandbox: Sandbox) -> Sandbox:
    test.addCleanup(quietly, f"kill {sandbox.sandbox_id}", sandbox.kill)
    return sandbox


def delete_later(test: unittest.TestCase, snapshot: Snapshot) -> Snapshot:
    test.addCleanup(quietly, f"delete {snapshot.id}", lambda: Snapshot.delete(snapshot.id, **CONN))
    return snapshot


def create(test: unittest.TestCase, **kwargs: Any) -> Sandbox:
    """Creates a sandbox marked with this run's id and registers its kill as a cleanup."""
    metadata = {"suite": "pysdk-snapshots", "run": RUN_ID, **kwargs.pop("metadata", {})}
    return kill_later(test, Sandbox.create(metadata=metadata, **CONN, **kwargs))


def snap(test: unittest.TestCase, sandbox: Sandbox, **metadata: str) -> Snapshot:
    """Snapshots a sandbox (metadata marked with this run's id) and registers its deletion."""
    return delete_later(test, sandbox.create_snapshot(metadata={"run": RUN_ID, **metadata}))


class DocumentationSnippetsTest(unittest.TestCase):
    """The three documented snippets run as written, configured through the environment.

    ``Sandbox.create`` and ``Sandbox.create_snapshot`` are wrapped only to record what the snippets
    create, so that it is killed / deleted even when a snippet fails half-way.
    """

    def run_snippet(self, source: str, namespace: dict[str, Any]) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(source, "<snippet>", "exec"), namespace)
        return out.getvalue()

    def test_documented_snippets(self):
        sandboxes: list[Sandbox] = []
        snapshots: list[Snapshot] = []
        real_create = Sandbox.create.__func__  # type: ignore[attr-defined]
        real_create_snapshot = Sandbox.create_snapshot

        def recording_create(cls, *args, **kwargs):
            sandbox = real_create(cls, *args, **kwargs)
            sandboxes.append(kill_later(self, sandbox))
            return sandbox

        def recording_create_snapshot(sandbox, *args, **kwargs):
            snapshot = real_create_snapshot(sandbox, *args, **kwargs)
            snapshots.append(delete_later(self, snapshot))
            return snapshot

        env = {"NULLSPACE_API_URL": API_URL}
        if API_KEY:
            env["NULLSPACE_API_KEY"] = API_KEY
        with mock.patch.dict(os.environ, env), mock.patch.object(Sandbox, "create", classmethod(recording_create)), mock.patch.object(
            Sandbox, "create_snapshot", recording_create_snapshot
        ):
            # 1: snapshot a sandbox (it keeps running with its files)
            namespace: dict[str, Any] = {}
            out = self.run_snippet(SNIPPET_CREATE, namespace)
            self.assertEqual((len(sandboxes), len(snapshots)), (1, 1))
            source, snapshot = sandboxes[0], snapshots[0]
            self.assertRegex(snapshot.id, r"^snap_[0-9a-z]+$")
            self.assertEqual(out, f"{snapshot.id}\nbaseline\n\n")
            self.assertEqual(snapshot.sandbox_id, source.sandbox_id)
            self.assertTrue(source.is_running())

            # 2: two children started from it, in the same session (it uses `snapshot`)
            out = self.run_snippet(SNIPPET_CHILDREN, namespace)
            self.assertEqual(out, "first child\n\nsecond child\n\n")
            self.assertEqual(len(sandboxes), 3)
            for child in sandboxes[1:]:
                info = child.get_info()
                self.assertEqual((info.snapshot_id, info.template), (snapshot.id, "base"))
                self.assertIn(info.state, ("killing", "killed"))
            self.assertNotEqual(sandboxes[1].sandbox_id, sandboxes[2].sandbox_id)
            # the children's writes did not touch the source
            self.assertEqual(source.files.read("/workspace/state.txt"), "baseline\n")

            # 3: get, list and delete it by id
            out = self.run_snippet(SNIPPET_MANAGE.replace("snap_...", snapshot.id), {})
            self.assertEqual(out, f"{snapshot.id} {source.sandbox_id} {snapshot.created_at}\n{snapshot.id} {{}}\n")
            with self.assertRaises(SnapshotNotFoundError):
                Snapshot.get(snapshot.id, **CONN)
            self.assertFalse(Snapshot.delete(snapshot.id, **CONN))
        self.assertEqual(len(snapshots), 1)


class SnapshotTest(unittest.TestCase):
    def test_children_are_independent(self):
        source = create(self)
        source.files.write("/workspace/state.txt", "baseline\n")
        # memory is captured too: a tmpfs file and a running process
        setup = source.commands.run("echo in-memory > /dev/shm/mem.txt; (sleep 600 >/dev/null 2>&1 &); true")
        self.assertEqual(setup.exit_code, 0)
        t0 = datetime.now(timezone.utc)
        snapshot = snap(self, source, case="independence")
        self.assertEqual((snapshot.sandbox_id, snapshot.kind, snapshot.template), (source.sandbox_id, "reusable", "base"))
        self.assertEqual(snapshot.metadata, {"run": RUN_ID, "case": "independence"})
        self.assertIsNotNone(snapshot.created_at.tzinfo)
        self.assertLess(abs(snapshot.created_at - t0), timedelta(minutes=5))
        self.assertGreater(snapshot.size_bytes, 0)
        self.assertTrue(snapshot.pause_ms is None or snapshot.pause_ms >= 0)
        self.assertEqual(Snapshot.get(snapshot.id, **CONN), snapshot)

        # the source keeps running and changes after the snapshot
        self.assertTrue(source.is_running())
        source.files.write("/workspace/state.txt", "source after\n")
        source.files.write("/workspace/source-only.txt", "s")

        first = create(self, snapshot_id=snapshot.id)
        second = create(self, snapshot_id=snapshot.id)
        self.assertEqual(len({source.sandbox_id, first.sandbox_id, second.sandbox_id}), 3)
        for child in (first, second):
            info = child.get_info()
            self.assertEqual((info.snapshot_id, info.template, info.state), (snapshot.id, "base", "running"))
            # the state of the snapshot's instant, not the source's later one
            self.assertEqual(child.files.read("/workspace/state.txt"), "baseline\n")
            self.assertFalse(child.files.exists("/workspace/source-only.txt"))
            r = child.commands.run("cat /dev/shm/mem.txt; pgrep -x sleep >/dev/null && echo sleeping")
            self.assertEqual(r.stdout, "in-memory\nsleeping\n")

        first.files.write("/workspace/state.txt", "first child\n")
        first.files.write("/workspace/first-only.txt", "1")
        second.files.write("/workspace/state.txt", "second child\n")
        first.commands.run("echo first > /dev/shm/mem.txt")
        self.assertEqual(first.files.read("/workspace/state.txt"), "first child\n")
        self.assertEqual(second.files.read("/workspace/state.txt"), "second child\n")
        self.assertEqual(source.files.read("/workspace/state.txt"), "source after\n")
        self.assertFalse(second.files.exists("/workspace/first-only.txt"))
        self.assertFalse(source.files.exists("/workspace/first-only.txt"))
        self.assertEqual(second.commands.run("cat /dev/shm/mem.txt").stdout, "in-memory\n")
        self.assertEqual(source.commands.run("cat /dev/shm/mem.txt").stdout, "in-memory\n")
        # each child is a machine of its own
        ids = [s.commands.run("hostname").stdout.strip() for s in (source, first, second)]
        self.assertEqual(ids, [source.sandbox_id, first.sandbox_id, second.sandbox_id])

        # deleting the snapshot leaves its children running; killing one leaves the other
        self.assertTrue(snapshot.delete())
        self.assertFalse(snapshot.delete())
        first.kill()
        self.assertFalse(first.is_running())
        self.assertEqual(second.files.read("/workspace/state.txt"), "second child\n")
        self.assertEqual(source.files.read("/workspace/state.txt"), "source after\n")
        with self.assertRaises(SnapshotNotFoundError):
            kill_later(self, Sandbox.create(snapshot_id=snapshot.id, **CONN))

    def test_snapshot_of_a_killed_sandbox(self):
        sandbox = create(self)
        sandbox.kill()
        with self.assertRaises(ConflictError) as cm:
            delete_later(self, sandbox.create_snapshot())  # deleted if the server wrongly accepted it
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "sandbox_not_running"))
        self.assertIsInstance(cm.exception, SandboxNotRunningError)
        self.assertEqual(list(Snapshot.list(sandbox_id=sandbox.sandbox_id, **CONN)), [])

    def test_unknown_snapshot(self):
        for missing in ("snap_doesnotexist0000", "snap_0000000000000000", "not-a-snapshot-id"):
            with self.subTest(snapshot_id=missing):
                with self.assertRaises(SnapshotNotFoundError) as cm:
                    Snapshot.get(missing, **CONN)
                self.assertEqual((cm.exception.status, cm.exception.code), (404, "snapshot_not_found"))
                with self.assertRaises(SnapshotNotFoundError):
                    kill_later(self, Sandbox.create(snapshot_id=missing, **CONN))  # killed if wrongly created
                with self.assertRaises(SnapshotNotFoundError):
                    Snapshot.compatibility(missing, **CONN)
                self.assertFalse(Snapshot.delete(missing, **CONN))

    def test_compatibility_of_a_fresh_snapshot(self):
        snapshot = snap(self, create(self), case="compat")
        c = Snapshot.compatibility(snapshot.id, **CONN)
        self.assertIsInstance(c, Compatibility)
        self.assertEqual((c.snapshot_id, c.compatible, c.mismatches), (snapshot.id, True, []))
        self.assertIsInstance(c.requirements, dict)
        self.assertTrue(c.requirements)
        self.assertEqual(snapshot.compatibility(), c)

    def test_list_filters(self):
        tag = uuid.uuid4().hex[:8]
        a, b = create(self), create(self)
        s1 = snap(self, a, case=tag, n="1")
        s2 = snap(self, a, case=tag, n="2")
        s3 = snap(self, b, case=tag, n="3")
        ids = lambda p: [s.id for s in p]  # noqa: E731

        # metadata: every pair must match; oldest first
        self.assertEqual(ids(Snapshot.list(metadata={"run": RUN_ID, "case": tag}, **CONN)), [s1.id, s2.id, s3.id])
        self.assertEqual(ids(Snapshot.list(metadata={"case": tag, "n": "2"}, **CONN)), [s2.id])
        self.assertEqual(ids(Snapshot.list(metadata={"case": tag, "n": "4"}, **CONN)), [])
        self.assertEqual(ids(Snapshot.list(metadata={"case": "other-" + tag}, **CONN)), [])
        # sandbox
        self.assertEqual(ids(Snapshot.list(sandbox_id=a.sandbox_id, metadata={"case": tag}, **CONN)), [s1.id, s2.id])
        self.assertEqual(ids(Snapshot.list(sandbox_id=b.sandbox_id, **CONN)), [s3.id])
        # kind: a string or a list
        self.assertEqual(ids(Snapshot.list(kind="reusable", metadata={"case": tag}, **CONN)), [s1.id, s2.id, s3.id])
        self.assertEqual(ids(Snapshot.list(kind=["reusable", "fork"], metadata={"case": tag}, **CONN)), [s1.id, s2.id, s3.id])
        self.assertEqual(ids(Snapshot.list(kind="hibernate", metadata={"case": tag}, **CONN)), [])
        self.assertEqual(ids(Snapshot.list(kind=["fork", "hibernate"], metadata={"case": tag}, **CONN)), [])
        with self.assertRaises(InvalidArgumentError):
            Snapshot.list(kind="nonsense", **CONN).next_items()

        # pages
        pages = Snapshot.list(metadata={"case": tag}, limit=2, **CONN)
        self.assertEqual(ids(pages.next_items()), [s1.id, s2.id])
        self.assertTrue(pages.has_next)
        self.assertIsNotNone(pages.next_token)
        self.assertEqual(ids(pages.next_items()), [s3.id])
        self.assertEqual(pages.next_items(), [])
        self.assertFalse(pages.has_next)
        self.assertEqual(ids(Snapshot.list(metadata={"case": tag}, limit=1, **CONN)), [s1.id, s2.id, s3.id])

        listed = {s.id: s for s in Snapshot.list(metadata={"case": tag}, **CONN)}
        self.assertEqual(listed[s2.id], s2)
        self.assertEqual(listed[s2.id].metadata, {"run": RUN_ID, "case": tag, "n": "2"})

        # deleted snapshots leave the list
        self.assertTrue(Snapshot.delete(s2.id, **CONN))
        self.assertTrue(listed[s1.id].delete())
        self.assertEqual(ids(Snapshot.list(metadata={"case": tag}, **CONN)), [s3.id])


if __name__ == "__main__":
    unittest.main()
