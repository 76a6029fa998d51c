"""The :class:`Sandbox` class and the paginated sandbox list."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json as _json
import time
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union, overload

from ._util import client as _client
from ._util import dualmethod as _dualmethod
from ._util import quote as _quote
from .commands import Commands
from .pty import Pty
from .connection import ApiClient
from .errors import SandboxError
from .filesystem import Filesystem
from .models import SandboxEvent, SandboxInfo, SandboxMetrics
from .pagination import Paginator
from .snapshot import Snapshot

__all__ = ["Sandbox", "SandboxPaginator"]


SandboxPaginator = Paginator
"""The former name of :class:`~nullspace.pagination.Paginator` (what :meth:`Sandbox.list` returns)."""


class Sandbox:
    """A nullspace sandbox: a real VM started from a template snapshot.

    Example::

        from nullspace import Sandbox

        with Sandbox.create(template="base") as sandbox:
            sandbox.files.write("/workspace/hello.txt", "hi")
            print(sandbox.commands.run("cat /workspace/hello.txt").stdout)

    Create one with :meth:`create` or attach to an existing one with :meth:`connect`. Every class
    method takes ``api_key``, ``api_url`` and ``request_timeout`` (seconds), defaulting to
    ``$NULLSPACE_API_KEY`` (else the local server's key file), ``$NULLSPACE_API_URL`` (else
    ``http://127.0.0.1:7070``) and 120.

    Attributes:
        sandbox_id: The sandbox's id (``sbx_...``).
        files: Its :class:`~nullspace.filesystem.Filesystem`.
        commands: Its :class:`~nullspace.commands.Commands`.
    """

    def __init__(self, sandbox_id: str, api: ApiClient, network: Optional[Mapping[str, Any]] = None) -> None:
        """Internal: use :meth:`create` or :meth:`connect`."""
        self.sandbox_id: str = sandbox_id
        self._api = api
        self._network: dict[str, Any] = dict(network or {})
        self.files: Filesystem = Filesystem(api, sandbox_id)
        self.commands: Commands = Commands(api, sandbox_id)
        #: Terminals: processes on a pseudo-terminal (the login shell by default).
        self.pty: Pty = Pty(api, sandbox_id)

    def __repr__(self) -> str:
        return f"Sandbox(sandbox_id={self.sandbox_id!r})"

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Any) -> None:
        try:
            self.kill()
        except SandboxError:
            if exc_type is None:
                raise  # nothing else is being raised: report the failed kill

    @classmethod
    def create(
        cls,
        template: Optional[str] = None,
        *,
        snapshot_id: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout_ms: Optional[int] = None,
        allow_internet_access: Optional[bool] = None,
        lifecycle: Optional[Mapping[str, Any]] = None,
        network: Optional[Mapping[str, Any]] = None,
        volumes: Optional[Mapping[str, str]] = None,
        allow_missing_volumes: Optional[bool] = None,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """Starts a sandbox from a template, or from a reusable snapshot: a copy-on-write restore
        of its memory and disk.

        Args:
            template: Template name (default ``"base"``). Not with ``snapshot_id``.
            snapshot_id: Start from this reusable snapshot (see :meth:`create_snapshot`) instead of
                a template: the new sandbox resumes with the memory and files the source had at
                the snapshot's instant. Its template is the snapshot's.
            metadata: Flat string map, usable as a filter in :meth:`list`.
            envs: Default environment of every command.
            timeout_ms: The sandbox is killed after this long unless :meth:`set_timeout` is
                called again (server default 300000).
            allow_internet_access: ``False`` cuts all outbound network traffic (default ``True``).
            lifecycle: ``{"on_timeout": "hibernate"}`` makes the timeout hibernate the sandbox
                instead of killing it (:meth:`connect` resumes it); default ``"kill"``.
                ``"auto_resume": True``: a request to one of its preview URLs resumes it too.
            network: ``{"allow_public_traffic": True}`` serves its preview URLs
                (:meth:`get_host`) without the traffic token (default ``False``).
                ``"allow_out"``, ``"deny_out"``: egress rules, lists of IPs, CIDRs, domain names
                and ``*.domain`` wildcards (names are matched on each connection's TLS SNI or
                HTTP Host). A deny match wins; a non-empty allow list refuses everything it does
                not match. From a snapshot: the snapshot's rules unless given.
            volumes: Shared volumes to mount: ``{"/guest/path": "volume-name"}`` (see
                :class:`~nullspace.Volume`). From a snapshot, its volumes are remounted.
            allow_missing_volumes: From a snapshot whose volume was deleted: start without it
                instead of raising ``ConflictError`` (code ``volume_missing``).

        Raises:
            ValueError: both ``template`` and ``snapshot_id`` were given.
            TemplateNotFoundError: no such template.
            SnapshotNotFoundError: no such snapshot.
            ConflictError: code ``snapshot_incompatible`` when this host cannot restore the
                snapshot (see :meth:`Snapshot.compatibility`).
            InvalidArgumentError: the snapshot is not a reusable one (a hibernation snapshot).
            RateLimitError, ServiceUnavailableError: the server cannot start more sandboxes now.
        """
        if template is not None and snapshot_id is not None:
            raise ValueError("pass either template or snapshot_id, not both (a snapshot brings its own template)")
        api = _client(api_key, api_url, request_timeout)
        body: dict[str, Any] = {"snapshotId": snapshot_id} if snapshot_id is not None else {"template": "base" if template is None else template}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if envs is not None:
            body["envs"] = dict(envs)
        if timeout_ms is not None:
            body["timeoutMs"] = timeout_ms
        if allow_internet_access is not None:
            body["allowInternetAccess"] = allow_internet_access
        if lifecycle is not None:
            on_timeout = lifecycle.get("on_timeout", lifecycle.get("onTimeout", "kill"))
            body["lifecycle"] = {"onTimeout": on_timeout}
            auto_resume = lifecycle.get("auto_resume", lifecycle.get("autoResume"))
            if auto_resume is not None:
                body["lifecycle"]["autoResume"] = bool(auto_resume)
        if network is not None:
            public = network.get("allow_public_traffic", network.get("allowPublicTraffic"))
            body["network"] = {} if public is None else {"allowPublicTraffic": bool(public)}
            for snake, camel in (("allow_out", "allowOut"), ("deny_out", "denyOut")):
                rules = network.get(snake, network.get(camel))
                if rules is not None:
                    body["network"][camel] = _rule_list(rules, snake)
        if volumes is not None:
            body["volumes"] = dict(volumes)
        if allow_missing_volumes is not None:
            body["allowMissingVolumes"] = allow_missing_volumes
        info = api.json("POST", "/v1/sandboxes", json=body)
        return cls(info["sandboxId"], api, info.get("network"))

    @classmethod
    def connect(
        cls,
        sandbox_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """A handle on an existing sandbox: a running one as it is, a paused (hibernated) one
        resumed from its latest hibernation first.

        Raises:
            SandboxNotFoundError: no such sandbox.
        """
        api = _client(api_key, api_url, request_timeout)
        info = api.json("GET", f"/v1/sandboxes/{_quote(sandbox_id)}")
        if info["state"] == "paused":
            info = api.json("POST", f"/v1/sandboxes/{_quote(sandbox_id)}/resume", json={})
        return cls(info["sandboxId"], api, info.get("network"))

    @classmethod
    def resume(
        cls,
        snapshot_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> "Sandbox":
        """Resumes the sandbox a hibernation snapshot belongs to, as the same sandbox (same id),
        from that snapshot: its processes continue with their memory, its files are there, its
        clock is current. A sandbox that already runs is returned as it is.

        Raises:
            SnapshotNotFoundError: no such snapshot.
            ConflictError: code ``snapshot_not_latest`` when the snapshot is not the sandbox's
                latest hibernation.
            InvalidArgumentError: the snapshot is a reusable one: start a new sandbox from it with
                ``Sandbox.create(snapshot_id=...)`` instead.
        """
        api = _client(api_key, api_url, request_timeout)
        info = api.json("POST", f"/v1/snapshots/{_quote(snapshot_id)}/resume", json={})
        return cls(info["sandboxId"], api, info.get("network"))

    @classmethod
    def list(
        cls,
        query: Optional[Mapping[str, Any]] = None,
        limit: Optional[int] = None,
        next_token: Optional[str] = None,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Paginator[SandboxInfo]:
        """Lists sandboxes, oldest first.

        Args:
            query: ``{"metadata": {key: value, ...}, "state": ["running", ...]}``; every metadata
                pair must match; the default states are the live ones (not killed or failed).
            limit: Page size (1-1000, server default 100).
            next_token: Start from this page token.

        Returns:
            A :class:`~nullspace.pagination.Paginator`: iterate it for every sandbox (all pages), or call
            ``next_items()`` page by page. Nothing is fetched before that.
        """
        api = _client(api_key, api_url, request_timeout)
        q = dict(query or {})
        unknown = set(q) - {"metadata", "state"}
        if unknown:
            raise ValueError(f"unknown query keys {sorted(unknown)}: expected 'metadata' and 'state'")
        states: Union[str, Iterable[str], None] = q.get("state")
        state_param = states if isinstance(states, str) or states is None else ",".join(states)
        metadata = [f"{k}={v}" for k, v in dict(q.get("metadata") or {}).items()]

        def fetch(token: Optional[str]) -> tuple[list[SandboxInfo], Optional[str]]:
            r = api.json(
                "GET",
                "/v1/sandboxes",
                query={"state": state_param or None, "metadata": metadata, "limit": limit, "nextToken": token},
            )
            return [SandboxInfo.from_json(s) for s in r["sandboxes"]], r.get("nextToken")

        return Paginator(fetch, next_token)

    @_dualmethod
    def get_info(
        cls,
        sandbox_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> SandboxInfo:
        """Information about a sandbox: ``Sandbox.get_info(sandbox_id)`` or ``sandbox.get_info()``.

        Raises:
            SandboxNotFoundError: no such sandbox.
        """
        api = _client(api_key, api_url, request_timeout)
        return SandboxInfo.from_json(api.json("GET", f"/v1/sandboxes/{_quote(sandbox_id)}"))

    @get_info.instance
    def get_info(self) -> SandboxInfo:  # noqa: F811
        """Information about this sandbox."""
        return SandboxInfo.from_json(self._api.json("GET", f"/v1/sandboxes/{_quote(self.sandbox_id)}"))

    @_dualmethod
    def kill(
        cls,
        sandbox_id: str,
        *,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> bool:
        """Kills a sandbox: ``Sandbox.kill(sandbox_id)`` (returns ``False`` when there is no such
        sandbox) or ``sandbox.kill()``. Killing a sandbox that already ended is harmless."""
        api = _client(api_key, api_url, request_timeout)
        try:
            api.json("DELETE", f"/v1/sandboxes/{_quote(sandbox_id)}")
            return True
        except SandboxError as e:
            if e.code == "sandbox_not_found":
                return False
            raise

    @kill.instance
    def kill(self) -> None:  # noqa: F811
        """Kills this sandbox (idempotent)."""
        self._api.json("DELETE", f"/v1/sandboxes/{_quote(self.sandbox_id)}")

    def is_running(self) -> bool:
        """Whether the sandbox is in the ``running`` state."""
        return self.get_info().state == "running"

    def update_network(self, *, allow_out: Optional[Sequence[str]] = None, deny_out: Optional[Sequence[str]] = None) -> dict[str, Any]:
        """Replaces this sandbox's egress rules (both lists: one not given is empty), effective at
        once for new connections. Returns ``{"allowOut", "denyOut", "refusedConnections"}``.

        Raises:
            InvalidArgumentError: code ``invalid_network_rule`` for a rule that is not an IP, a
                CIDR, a domain name or ``*.domain``.
            SandboxNotRunningError: the sandbox ended.
        """
        body = {"allowOut": _rule_list(allow_out or [], "allow_out"), "denyOut": _rule_list(deny_out or [], "deny_out")}
        return self._api.json("PUT", f"/v1/sandboxes/{_quote(self.sandbox_id)}/network", json=body)

    def get_network(self) -> dict[str, Any]:
        """This sandbox's egress rules and the connections they refused over its life:
        ``{"allowOut": [...], "denyOut": [...], "refusedConnections": n}``."""
        return self._api.json("GET", f"/v1/sandboxes/{_quote(self.sandbox_id)}/network")

    def set_timeout(self, timeout_ms: int) -> None:
        """The sandbox is killed ``timeout_ms`` from now unless this is called again.

        Raises:
            SandboxNotRunningError: the sandbox is not running.
        """
        self._api.json("POST", f"/v1/sandboxes/{_quote(self.sandbox_id)}/timeout", json={"timeoutMs": timeout_ms})

    @overload
    def fork(
        self,
        *,
        metadata: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout_ms: Optional[int] = None,
    ) -> "Sandbox": ...

    @overload
    def fork(
        self,
        *,
        count: int,
        metadata: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout_ms: Optional[int] = None,
    ) -> "list[Sandbox]": ...

    def fork(
        self,
        *,
        count: Optional[int] = None,
        metadata: Optional[Mapping[str, str]] = None,
        envs: Optional[Mapping[str, str]] = None,
        timeout_ms: Optional[int] = None,
    ) -> "Union[Sandbox, list[Sandbox]]":
        """Forks this sandbox: returns a new running sandbox whose memory and disk equal this one's
        at the fork instant (its processes included), or with ``count`` (1-32) a list of that many,
        all from one capture: this sandbox is paused once, however many children.

        This sandbox is paused only briefly and keeps running, with its id, timeout and state. The
        children's metadata and timeout default to this sandbox's. With ``count``, either every
        child starts or none does.

        Raises:
            SandboxNotRunningError: this sandbox is not running (killed, hibernated, ...).
            RateLimitError: admission control refused the children (before this sandbox was paused).
            InvalidArgumentError: ``count`` is not 1-32.
        """
        body: dict[str, Any] = {}
        if count is not None:
            body["count"] = count
        if metadata is not None:
            body["metadata"] = dict(metadata)
        if envs is not None:
            body["envs"] = dict(envs)
        if timeout_ms is not None:
            body["timeoutMs"] = timeout_ms
        info = self._api.json("POST", f"/v1/sandboxes/{_quote(self.sandbox_id)}/fork", json=body)
        if count is not None:
            return [type(self)(s["sandboxId"], self._api, s.get("network")) for s in info["sandboxes"]]
        return type(self)(info["sandboxId"], self._api, info.get("network"))

    def _net(self, field: str) -> Any:
        value = self._network.get(field)
        if value is None:
            raise ValueError("this server does not serve preview URLs (its sandbox view has no network)")
        return value

    @property
    def traffic_access_token(self) -> str:
        """The secret that opens this sandbox's preview URLs: send it as the
        ``X-Nullspace-Traffic-Token`` header. Each sandbox has its own (a fork too); it is not the
        API key."""
        return str(self._net("trafficAccessToken"))

    def get_host(self, port: int) -> str:
        """The host of a port's preview URL: ``<port>-<sandbox_id>.<domain>``; a request to it
        reaches that TCP port inside the sandbox (see docs/api.md, "Preview URLs")."""
        _check_port(port)
        return f"{port}-{self.sandbox_id}.{self._net('previewDomain')}"

    def get_signed_url(self, port: int, expires_in_s: int = 3600, path: str = "/") -> str:
        """A URL of ``port`` that opens without the header until it expires: for a browser, which
        gets a cookie for the host and the clean URL. Made here from the traffic token (an HMAC),
        without asking the server.

        Raises:
            ValueError: a port outside 1-65535, ``expires_in_s`` below 1, a path without a leading ``/``.
        """
        _check_port(port)
        if not isinstance(expires_in_s, int) or isinstance(expires_in_s, bool) or expires_in_s < 1:
            raise ValueError("expires_in_s must be a positive integer")
        if not path.startswith("/"):
            raise ValueError("path must start with /")
        expires = int(time.time()) + expires_in_s
        mac = hmac.new(self.traffic_access_token.encode(), f"{self.sandbox_id}:{port}:{expires}".encode(), hashlib.sha256).digest()
        sig = base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        sep = "&" if "?" in path else "?"
        return f"{self._net('previewScheme')}://{self.get_host(port)}{path}{sep}ns_token={sig}&expires={expires}"

    def get_metrics(
        self,
        start: Optional[Union[datetime, int, float]] = None,
        end: Optional[Union[datetime, int, float]] = None,
    ) -> list[SandboxMetrics]:
        """The sandbox's metrics samples, oldest first: one every 5 s while it runs (the server's
        ``NULLSPACE_METRICS_INTERVAL_MS``), the last hour of them. ``start`` and ``end`` (datetimes,
        or ms since the epoch) bound the window."""

        def ms(t: Optional[Union[datetime, int, float]]) -> Optional[str]:
            if t is None:
                return None
            return str(int(t.timestamp() * 1000)) if isinstance(t, datetime) else str(int(t))

        r = self._api.json("GET", f"/v1/sandboxes/{_quote(self.sandbox_id)}/metrics", query={"start": ms(start), "end": ms(end)})
        return [SandboxMetrics.from_json(m) for m in r["metrics"]]

    @_dualmethod
    def events(
        cls,
        *,
        sandbox_id: Optional[str] = None,
        types: Optional[Sequence[str]] = None,
        last_event_id: Optional[int] = None,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> Iterator[SandboxEvent]:
        """The server's lifecycle events as a generator: ``Sandbox.events(...)`` (every sandbox's,
        or ``sandbox_id``'s) or ``sandbox.events(...)`` (this one's). Replayed after
        ``last_event_id`` when given (0: all the server keeps), then live; close the generator (or
        break out of the loop) to stop. A cut connection raises: resume with the last id seen."""
        return _event_stream(_client(api_key, api_url, request_timeout), sandbox_id, types, last_event_id)

    @events.instance
    def events(  # noqa: F811
        self, *, types: Optional[Sequence[str]] = None, last_event_id: Optional[int] = None
    ) -> Iterator[SandboxEvent]:
        """This sandbox's lifecycle events (see :meth:`Sandbox.events`)."""
        return _event_stream(self._api, self.sandbox_id, types, last_event_id)

    def hibernate(self) -> Snapshot:
        """Hibernates the sandbox: its memory and disk are persisted at one instant and its VM
        stops (no RAM used). It keeps its id, metadata and remaining timeout, and is ``paused``
        until :meth:`connect` or :meth:`resume` brings it back. On a paused sandbox, returns its
        latest hibernation snapshot.

        Raises:
            SandboxNotRunningError: the sandbox is killed or failed.
            NotEnoughSpaceError: the server's data disk is too full (the sandbox keeps running).
        """
        raw = self._api.json("POST", f"/v1/sandboxes/{_quote(self.sandbox_id)}/hibernate", json={})
        return Snapshot.from_json(raw, self._api)

    def pause(self) -> Snapshot:
        """Alias of :meth:`hibernate`."""
        return self.hibernate()

    def create_snapshot(self, metadata: Optional[Mapping[str, str]] = None) -> Snapshot:
        """Captures this sandbox's memory and disk at one instant into a reusable snapshot.

        The sandbox is paused only for the capture and keeps running. Start any number of new
        sandboxes from the snapshot with ``Sandbox.create(snapshot_id=snapshot.id)``; each one is
        independent of the others and of this sandbox.

        Args:
            metadata: Flat string map, usable as a filter in :meth:`Snapshot.list`.

        Raises:
            SandboxNotRunningError: the sandbox is not running.
            NotEnoughSpaceError: the server's data disk is too full.
        """
        body: dict[str, Any] = {}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        raw = self._api.json("POST", f"/v1/sandboxes/{_quote(self.sandbox_id)}/snapshots", json=body)
        return Snapshot.from_json(raw, self._api)


def _check_port(port: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")


def _rule_list(rules: Any, name: str) -> list[str]:
    if isinstance(rules, str) or not all(isinstance(r, str) for r in rules):
        raise TypeError(f"{name} must be a list of strings (IPs, CIDRs, domain names, *.domain)")
    return list(rules)


def _event_stream(api: ApiClient, sandbox_id: Optional[str], types: Optional[Sequence[str]], last_event_id: Optional[int]) -> Iterator[SandboxEvent]:
    """Reads ``GET /v1/events`` (Server-Sent Events) and yields each event's ``data``."""
    query = {"sandboxId": sandbox_id, "type": ",".join(types) if types else None, "after": None if last_event_id is None else str(last_event_id)}
    res = api.request("GET", "/v1/events", query=query, headers={"accept": "text/event-stream"}, timeout=None)
    try:
        pending = b""
        for chunk in res.iter_bytes():
            pending += chunk.replace(b"\r\n", b"\n")
            while b"\n\n" in pending:
                block, pending = pending.split(b"\n\n", 1)
                data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
                if data:
                    try:
                        yield SandboxEvent.from_json(_json.loads(b"\n".join(data)))
                    except ValueError as e:
                        raise SandboxError(f"the server sent an event that is not JSON: {e}", code="invalid_response") from e
    finally:
        res.close()
