"""Snapshots over HTTP against the scripted local fake server (no nullspace server needed):
request paths and bodies, query encoding of the list, pagination, error mapping."""

import os
import unittest
from datetime import datetime, timezone

import nullspace
from nullspace import (
    Compatibility,
    CompatibilityMismatch,
    ConflictError,
    InvalidArgumentError,
    Paginator,
    Sandbox,
    SandboxNotRunningError,
    Snapshot,
    SnapshotNotFoundError,
)

from _fakeserver import FakeServer, Request, error_reply, json_reply
from _snippets import SNIPPET_CHILDREN, SNIPPET_CREATE, SNIPPET_MANAGE
from test_http import KEY, SBX, sandbox_json

SNAP = "snap_fake00000000001"


def snapshot_json(i=1, kind="reusable", metadata=None, sandbox_id=SBX):
    return {
        "snapshotId": f"snap_fake{i:011d}",
        "sandboxId": sandbox_id,
        "kind": kind,
        "template": "base",
        "metadata": metadata if metadata is not None else {},
        "createdAt": "2024-05-06T07:08:09.123Z",
        "pauseMs": 12,
        "sizeBytes": 4096,
    }


def not_found(r: Request):
    snapshot_id = r.path.split("/")[3]
    return error_reply(404, "snapshot_not_found", f"snapshot {snapshot_id} not found", {"id": snapshot_id})


class FakeServerCase(unittest.TestCase):
    def setUp(self):
        self.server = FakeServer().__enter__()
        self.addCleanup(self.server.__exit__)
        self.conn = {"api_url": self.server.url, "api_key": KEY}
        self.server.routes[("GET", f"/v1/sandboxes/{SBX}")] = lambda r: json_reply(200, sandbox_json())
        self.sandbox = Sandbox.connect(SBX, **self.conn)
        self.server.requests.clear()

    def route(self, method, path):
        def register(fn):
            self.server.routes[(method, path)] = fn
            return fn

        return register


class SnapshotHttpTest(FakeServerCase):
    def test_create_snapshot(self):
        self.route("POST", f"/v1/sandboxes/{SBX}/snapshots")(lambda r: json_reply(201, snapshot_json(metadata=r.json().get("metadata", {}))))
        snap = self.sandbox.create_snapshot()
        req = self.server.requests[-1]
        self.assertEqual((req.method, req.path, req.json()), ("POST", f"/v1/sandboxes/{SBX}/snapshots", {}))
        self.assertEqual(req.headers["Authorization"], f"Bearer {KEY}")
        self.assertIsInstance(snap, Snapshot)
        self.assertEqual(
            (snap.id, snap.sandbox_id, snap.kind, snap.template, snap.metadata, snap.pause_ms, snap.size_bytes),
            (SNAP, SBX, "reusable", "base", {}, 12, 4096),
        )
        self.assertEqual(snap.created_at, datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc))
        self.assertIs(snap.created_at.tzinfo, timezone.utc)

        snap = self.sandbox.create_snapshot(metadata={"stage": "deps"})
        self.assertEqual(self.server.requests[-1].json(), {"metadata": {"stage": "deps"}})
        self.assertEqual(snap.metadata, {"stage": "deps"})
        self.assertIn(SNAP, repr(snap))

    def test_create_snapshot_of_a_stopped_sandbox(self):
        self.route("POST", f"/v1/sandboxes/{SBX}/snapshots")(lambda r: error_reply(409, "sandbox_not_running", "sandbox is killed", {"state": "killed"}))
        with self.assertRaises(SandboxNotRunningError) as cm:
            self.sandbox.create_snapshot()
        self.assertIsInstance(cm.exception, ConflictError)
        self.assertEqual((cm.exception.status, cm.exception.details), (409, {"state": "killed"}))

    def test_create_from_snapshot_omits_template(self):
        self.route("POST", "/v1/sandboxes")(lambda r: json_reply(201, dict(sandbox_json(2), snapshotId=SNAP)))
        child = Sandbox.create(snapshot_id=SNAP, metadata={"a": "b"}, **self.conn)
        self.assertEqual(child.sandbox_id, "sbx_fake000000000002")
        self.assertEqual(self.server.requests[-1].json(), {"snapshotId": SNAP, "metadata": {"a": "b"}})
        # without a snapshot, the default template is still sent
        Sandbox.create(**self.conn)
        self.assertEqual(self.server.requests[-1].json(), {"template": "base"})
        Sandbox.create("tpl", **self.conn)
        self.assertEqual(self.server.requests[-1].json(), {"template": "tpl"})
        # both: refused before any request (the server would answer 400)
        n = len(self.server.requests)
        with self.assertRaises(ValueError):
            Sandbox.create("base", snapshot_id=SNAP, **self.conn)
        with self.assertRaises(ValueError):
            Sandbox.create(template="tpl", snapshot_id=SNAP, **self.conn)
        self.assertEqual(len(self.server.requests), n)

    def test_create_from_unknown_or_incompatible_snapshot(self):
        @self.route("POST", "/v1/sandboxes")
        def create(r: Request):
            if r.json()["snapshotId"] == "snap_nope":
                return error_reply(404, "snapshot_not_found", "snapshot snap_nope not found")
            return error_reply(409, "snapshot_incompatible", "cpuModel differs", {"snapshotId": SNAP, "mismatches": [{"field": "cpuModel", "snapshot": "a", "host": "b"}]})

        with self.assertRaises(SnapshotNotFoundError):
            Sandbox.create(snapshot_id="snap_nope", **self.conn)
        with self.assertRaises(ConflictError) as cm:
            Sandbox.create(snapshot_id=SNAP, **self.conn)
        self.assertEqual(cm.exception.code, "snapshot_incompatible")
        self.assertEqual(cm.exception.details["mismatches"][0]["field"], "cpuModel")

    def test_get(self):
        self.route("GET", f"/v1/snapshots/{SNAP}")(lambda r: json_reply(200, snapshot_json(metadata={"k": "v"})))
        snap = Snapshot.get(SNAP, **self.conn)
        self.assertEqual(self.server.requests[-1].path, f"/v1/snapshots/{SNAP}")
        self.assertEqual((snap.id, snap.metadata), (SNAP, {"k": "v"}))

    def test_ids_are_quoted(self):
        self.route("GET", "/v1/snapshots/a/b")(lambda r: json_reply(200, snapshot_json()))
        with self.assertRaises(nullspace.NotFoundError):  # not the route above: "/" is escaped
            Snapshot.get("a/b", **self.conn)
        self.assertEqual(self.server.requests[-1].path, "/v1/snapshots/a%2Fb")

    def test_unknown_snapshot(self):
        for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/compatibility")):
            self.route(method, "/v1/snapshots/snap_nope" + suffix)(not_found)
        with self.assertRaises(SnapshotNotFoundError) as cm:
            Snapshot.get("snap_nope", **self.conn)
        e = cm.exception
        self.assertEqual((e.status, e.code, e.details), (404, "snapshot_not_found", {"id": "snap_nope"}))
        self.assertIsInstance(e, nullspace.NotFoundError)
        with self.assertRaises(SnapshotNotFoundError):
            Snapshot.compatibility("snap_nope", **self.conn)
        self.assertFalse(Snapshot.delete("snap_nope", **self.conn))

    def test_delete_class_and_instance(self):
        deleted = set()

        @self.route("DELETE", f"/v1/snapshots/{SNAP}")
        def delete(r: Request):
            if SNAP in deleted:
                return not_found(r)
            deleted.add(SNAP)
            return 204, {}, b""

        self.assertTrue(Snapshot.delete(SNAP, **self.conn))
        self.assertFalse(Snapshot.delete(SNAP, **self.conn))
        deleted.clear()
        self.route("GET", f"/v1/snapshots/{SNAP}")(lambda r: json_reply(200, snapshot_json()))
        snap = Snapshot.get(SNAP, **self.conn)
        self.assertTrue(snap.delete())
        self.assertFalse(snap.delete())
        self.assertEqual([r.method for r in self.server.requests], ["DELETE", "DELETE", "GET", "DELETE", "DELETE"])
        self.assertEqual({r.headers["Authorization"] for r in self.server.requests}, {f"Bearer {KEY}"})

    def test_delete_other_errors_are_raised(self):
        self.route("DELETE", f"/v1/snapshots/{SNAP}")(lambda r: error_reply(409, "conflict", "busy"))
        with self.assertRaises(ConflictError):
            Snapshot.delete(SNAP, **self.conn)

    def test_compatibility(self):
        body = {
            "snapshotId": SNAP,
            "compatible": False,
            "mismatches": [{"field": "cpuModel", "snapshot": "EPYC", "host": "Xeon"}, {"field": "memoryMiB", "snapshot": 512, "host": 256}],
            "requirements": {"cpuModel": "EPYC", "memoryMiB": 512},
        }
        self.route("GET", f"/v1/snapshots/{SNAP}/compatibility")(lambda r: json_reply(200, body))
        c = Snapshot.compatibility(SNAP, **self.conn)
        self.assertEqual(
            c,
            Compatibility(
                snapshot_id=SNAP,
                compatible=False,
                mismatches=[CompatibilityMismatch("cpuModel", "EPYC", "Xeon"), CompatibilityMismatch("memoryMiB", 512, 256)],
                requirements={"cpuModel": "EPYC", "memoryMiB": 512},
            ),
        )
        self.assertEqual(self.server.requests[-1].path, f"/v1/snapshots/{SNAP}/compatibility")
        self.route("GET", f"/v1/snapshots/{SNAP}")(lambda r: json_reply(200, snapshot_json()))
        self.assertEqual(Snapshot.get(SNAP, **self.conn).compatibility(), c)


class SnapshotListTest(FakeServerCase):
    def test_pages_and_query(self):
        pages = {None: ([1, 2], "tok1"), "tok1": ([3], None)}

        @self.route("GET", "/v1/snapshots")
        def page(r: Request):
            items, nxt = pages[r.query.get("nextToken", [None])[0]]
            return json_reply(200, {"snapshots": [snapshot_json(i) for i in items], "nextToken": nxt})

        p = Snapshot.list(sandbox_id=SBX, kind=["reusable", "fork"], metadata={"team": "a b", "k": "v=w&x"}, limit=2, **self.conn)
        self.assertIsInstance(p, Paginator)
        self.assertEqual(self.server.requests, [])  # lazy
        self.assertEqual([s.id for s in p], [f"snap_fake{i:011d}" for i in (1, 2, 3)])
        first, second = self.server.requests
        self.assertEqual(first.path, "/v1/snapshots")
        self.assertEqual(
            first.query,
            {"sandboxId": [SBX], "kind": ["reusable,fork"], "metadata": ["team=a b", "k=v=w&x"], "limit": ["2"]},
        )
        self.assertEqual(second.query["nextToken"], ["tok1"])
        self.assertEqual(second.query["kind"], ["reusable,fork"])

    def test_page_by_page(self):
        pages = {None: ([1], "tok1"), "tok1": ([2], None)}
        self.route("GET", "/v1/snapshots")(
            lambda r: json_reply(200, {"snapshots": [snapshot_json(i) for i in pages[r.query.get("nextToken", [None])[0]][0]], "nextToken": pages[r.query.get("nextToken", [None])[0]][1]})
        )
        p = Snapshot.list(kind="hibernate", **self.conn)
        self.assertTrue(p.has_next)
        self.assertIsNone(p.next_token)
        self.assertEqual([s.id for s in p.next_items()], ["snap_fake00000000001"])
        self.assertEqual((p.has_next, p.next_token), (True, "tok1"))
        self.assertEqual([s.id for s in p.next_items()], ["snap_fake00000000002"])
        self.assertEqual((p.has_next, p.next_token), (False, None))
        self.assertEqual(p.next_items(), [])
        self.assertEqual(len(self.server.requests), 2)
        self.assertEqual(self.server.requests[0].query, {"kind": ["hibernate"]})
        # resuming from a token
        resumed = Snapshot.list(next_token="tok1", **self.conn)
        self.assertEqual([s.id for s in resumed], ["snap_fake00000000002"])
        self.assertEqual(self.server.requests[-1].query, {"nextToken": ["tok1"]})

    def test_no_filters_and_listed_items_can_be_deleted(self):
        self.route("GET", "/v1/snapshots")(lambda r: json_reply(200, {"snapshots": [snapshot_json()], "nextToken": None}))
        self.route("DELETE", f"/v1/snapshots/{SNAP}")(lambda r: (204, {}, b""))
        [snap] = list(Snapshot.list(**self.conn))
        self.assertEqual(self.server.requests[0].query, {})
        self.assertTrue(snap.delete())
        self.assertEqual(self.server.requests[-1].path, f"/v1/snapshots/{SNAP}")

    def test_bad_kind(self):
        self.route("GET", "/v1/snapshots")(lambda r: error_reply(400, "bad_request", 'unknown snapshot kind "x"', {"field": "kind"}))
        with self.assertRaises(InvalidArgumentError):
            Snapshot.list(kind="x", **self.conn).next_items()

    def test_sandbox_list_uses_the_same_paginator(self):
        self.route("GET", "/v1/sandboxes")(lambda r: json_reply(200, {"sandboxes": [], "nextToken": None}))
        p = Sandbox.list(**self.conn)
        self.assertIsInstance(p, Paginator)
        self.assertIs(nullspace.SandboxPaginator, Paginator)
        self.assertEqual(list(p), [])


class DocumentationTest(unittest.TestCase):
    def test_readme_has_the_tested_snippets_verbatim(self):
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        for snippet in (SNIPPET_CREATE, SNIPPET_CHILDREN, SNIPPET_MANAGE):
            compile(snippet, "<snippet>", "exec")
            self.assertIn(f"```python\n{snippet}```\n", text)


if __name__ == "__main__":
    unittest.main()
