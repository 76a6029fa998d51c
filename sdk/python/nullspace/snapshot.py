"""Reusable snapshots: the :class:`Snapshot` class."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Optional, Union

from ._util import client as _client
from ._util import dualmethod as _dualmethod
from ._util import quote as _quote
from .connection import ApiClient
from .errors import SandboxError
from .models import Compatibility, parse_datetime
from .pagination import Paginator

__all__ = ["Snapshot", "SnapshotPaginator"]

SnapshotPaginator = Paginator
"""What :meth:`Snapshot.list` returns: a :class:`~nullspace.pagination.Paginator` of snapshots."""


@dataclass(frozen=True)
class Snapshot:
    """A snapshot: a sandbox's memory and root disk captured at one instant.

    A reusable snapshot starts any number of new sandboxes, each independent of the others and of
    the source::

        from nullspace import Sandbox, Snapshot

        snapshot = sandbox.create_snapshot(metadata={"stage": "deps-installed"})
        child = Sandbox.create(snapshot_id=snapshot.id)
        ...
        Snapshot.delete(snapshot.id)

    Get one with :meth:`Sandbox.create_snapshot`, :meth:`get` or :meth:`list`. Every class method
    takes ``api_key``, ``api_url`` and ``request_timeout`` like :class:`~nullspace.Sandbox`.

    Attributes:
        id: The snapshot's id (``snap_...``).
        sandbox_id: The sandbox it was captured from.
        kind: ``"reusable"`` (:meth:`Sandbox.create_snapshot`), ``"hibernate"`` (kept for a paused
            sandbox) or ``"fork"``.
        template: The template of the source sandbox (and of sandboxes started from it).
        metadata: The flat string map given at creation.
        created_at: When it was captured (aware UTC datetime).
        pause_ms: How long the source sandbox was paused for the capture (``None`` if unknown).
        size_bytes: Bytes allocated by its layers (blocks shared with other snapshots counted in
            each).
        volumes: The shared volumes the source mounted, guest path -> volume name (their content
            is never in the snapshot: a sandbox started from it mounts them again).
    """

    id: str
    sandbox_id: str
    kind: str
    template: str
    metadata: dict[str, str]
    created_at: datetime
    pause_ms: Optional[int]
    size_bytes: int
    volumes: dict[str, str] = field(default_factory=dict)
    _api: Optional[ApiClient] = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(cls, r: Mapping[str, Any], api: Optional[ApiClient] = None) -> "Snapshot":
        """From the API's ``Snapshot`` object (``api``: the client used by :meth:`delete` on the
        instance)."""
        return cls(
            id=r["snapshotId"],
            sandbox_id=r["sandboxId"],
            kind=r["kind"],
            template=r["template"],
            metadata=dict(r.get("metadata") or {}),
            created_at=parse_datetime(r["createdAt"]),  # type: ignore[arg-type]
            pause_ms=r.get("pauseMs"),
            size_bytes=r.get("sizeBytes", 0),
            volumes=dict(r.get("volumes") or {}),
            _api=api,
        )

    def _api_client(self) -> ApiClient:
        return self._api if self._api is not None else _client(None, None, None)

    @classmethod
    def get(
        cls,
        snapshot_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Snapshot":
        """A snapshot by id.

        Raises:
            SnapshotNotFoundError: no such snapshot.
        """
        api = _client(api_key, api_url, request_timeout)
        return cls.from_json(api.json("GET", f"/v1/snapshots/{_quote(snapshot_id)}"), api)

    @classmethod
    def list(
        cls,
        sandbox_id: Optional[str] = None,
        kind: Union[str, Iterable[str], None] = None,
        metadata: Optional[Mapping[str, str]] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Paginator[Snapshot]:
        """Lists snapshots, oldest first.

        Args:
            sandbox_id: Only the snapshots of this sandbox.
            kind: A kind or a list of kinds (``"reusable"``, ``"hibernate"``, ``"fork"``); default
                reusable and hibernate snapshots.
            metadata: Only snapshots whose metadata has every one of these pairs.
            limit: Page size (1-1000, server default 100).
            next_token: Start from this page token.

        Returns:
            A :class:`~nullspace.pagination.Paginator`: iterate it for every snapshot (all pages),
            or call ``next_items()`` page by page. Nothing is fetched before that.

        Raises:
            InvalidArgumentError: an unknown kind (when the first page is fetched).
        """
        api = _client(api_key, api_url, request_timeout)
        kind_param = kind if isinstance(kind, str) or kind is None else ",".join(kind)
        pairs = [f"{k}={v}" for k, v in dict(metadata or {}).items()]

        def fetch(token: Optional[str]) -> tuple[list[Snapshot], Optional[str]]:
            r = api.json(
                "GET",
                "/v1/snapshots",
                query={"sandboxId": sandbox_id, "kind": kind_param or None, "metadata": pairs, "limit": limit, "nextToken": token},
            )
            return [cls.from_json(s, api) for s in r["snapshots"]], r.get("nextToken")

        return Paginator(fetch, next_token)

    @_dualmethod
    def delete(
        cls,
        snapshot_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bool:
        """Deletes a snapshot: ``Snapshot.delete(snapshot_id)`` or ``snapshot.delete()``.

        Returns ``False`` when there is no such snapshot (already deleted). Sandboxes started from
        it keep running; its storage is freed once nothing uses it.
        """
        return _delete(_client(api_key, api_url, request_timeout), snapshot_id)

    @delete.instance
    def delete(self) -> bool:  # noqa: F811
        """Deletes this snapshot; ``False`` when it was already deleted."""
        return _delete(self._api_client(), self.id)

    @_dualmethod
    def compatibility(
        cls,
        snapshot_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Compatibility:
        """Whether this server's host can restore a snapshot, and if not which of its
        requirements differ: ``Snapshot.compatibility(snapshot_id)`` or ``snapshot.compatibility()``.

        Raises:
            SnapshotNotFoundError: no such snapshot.
        """
        return _compatibility(_client(api_key, api_url, request_timeout), snapshot_id)

    @compatibility.instance
    def compatibility(self) -> Compatibility:  # noqa: F811
        """Whether this server's host can restore this snapshot."""
        return _compatibility(self._api_client(), self.id)


def _delete(api: ApiClient, snapshot_id: str) -> bool:
    try:
        api.json("DELETE", f"/v1/snapshots/{_quote(snapshot_id)}")
        return True
    except SandboxError as e:
        if e.code == "snapshot_not_found":
            return False
        raise


def _compatibility(api: ApiClient, snapshot_id: str) -> Compatibility:
    return Compatibility.from_json(api.json("GET", f"/v1/snapshots/{_quote(snapshot_id)}/compatibility"))
