"""Data classes of the SDK, and their conversion from the API's JSON shapes.

Datetimes are timezone-aware UTC :class:`datetime.datetime` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, Optional, Union

__all__ = [
    "SandboxState",
    "EntryType",
    "SandboxInfo",
    "EntryInfo",
    "WriteInfo",
    "WriteEntry",
    "FilesystemEvent",
    "CommandResult",
    "ProcessInfo",
    "SnapshotKind",
    "CompatibilityMismatch",
    "Compatibility",
    "SandboxMetrics",
    "SandboxEvent",
]

SandboxState = Literal["creating", "running", "hibernating", "paused", "resuming", "killing", "killed", "failed"]
EntryType = Literal["file", "dir", "symlink", "other"]
SnapshotKind = Literal["reusable", "hibernate", "fork"]

FileData = Union[str, bytes, bytearray, memoryview, Any]
"""What :meth:`Filesystem.write` accepts: text (written as UTF-8), bytes, a binary (or text)
file-like object with ``read``, or an iterable of bytes chunks."""


def parse_datetime(value: Optional[str]) -> Optional[datetime]:
    """An ISO 8601 string of the API (``2024-01-02T03:04:05.678Z``) as an aware UTC datetime."""
    if value is None:
        return None
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def datetime_from_ms(ms: float) -> datetime:
    """Milliseconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)


@dataclass(frozen=True)
class SandboxInfo:
    """What the server knows about a sandbox."""

    sandbox_id: str
    template: str
    snapshot_id: Optional[str]
    state: str
    """One of :data:`SandboxState`."""
    metadata: dict[str, str]
    memory_mib: int
    vcpus: int
    allow_internet_access: bool
    timeout_ms: int
    created_at: datetime
    started_at: Optional[datetime]
    expires_at: Optional[datetime]
    """When a running sandbox times out (``None`` when it is not running)."""
    ended_at: Optional[datetime]
    end_reason: Optional[str]
    error_code: Optional[str]
    forked_from: Optional[str] = None
    """The sandbox it was forked from (``None`` unless it is a fork child)."""
    on_timeout: str = "kill"
    """What its timeout does: ``"kill"`` or ``"hibernate"``."""
    paused_at: Optional[datetime] = None
    """When it was hibernated (paused sandboxes)."""
    remaining_timeout_ms: Optional[int] = None
    """While paused: the timeout it resumes with."""
    volumes: Optional[dict[str, str]] = None
    """Mounted shared volumes: guest path -> volume name."""
    auto_resume: bool = False
    """A request to one of its preview URLs resumes it when hibernated."""
    allow_public_traffic: bool = False
    """Its preview URLs answer without the traffic token."""
    traffic_access_token: Optional[str] = None
    """The secret of its preview URLs (header ``X-Nullspace-Traffic-Token``; signs signed URLs)."""
    preview_domain: Optional[str] = None
    """Its preview URLs are ``<port>-<sandbox_id>.<preview_domain>``."""
    preview_scheme: str = "http"
    host_id: str = "local"
    """The runtime host it runs on (``"local"``: the server's own)."""

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "SandboxInfo":
        """From the API's ``Sandbox`` object."""
        return cls(
            sandbox_id=r["sandboxId"],
            template=r["template"],
            snapshot_id=r.get("snapshotId"),
            state=r["state"],
            metadata=dict(r.get("metadata") or {}),
            memory_mib=r["memoryMiB"],
            vcpus=r["vcpus"],
            allow_internet_access=r["allowInternetAccess"],
            timeout_ms=r["timeoutMs"],
            created_at=parse_datetime(r["createdAt"]),  # type: ignore[arg-type]
            started_at=parse_datetime(r.get("startedAt")),
            expires_at=parse_datetime(r.get("expiresAt")),
            ended_at=parse_datetime(r.get("endedAt")),
            end_reason=r.get("endReason"),
            error_code=r.get("errorCode"),
            forked_from=r.get("forkedFrom"),
            on_timeout=(r.get("lifecycle") or {}).get("onTimeout", "kill"),
            paused_at=parse_datetime(r.get("pausedAt")),
            remaining_timeout_ms=r.get("remainingTimeoutMs"),
            host_id=r.get("hostId", "local"),
            volumes=dict(r.get("volumes") or {}),
            auto_resume=bool((r.get("lifecycle") or {}).get("autoResume", False)),
            allow_public_traffic=bool((r.get("network") or {}).get("allowPublicTraffic", False)),
            traffic_access_token=(r.get("network") or {}).get("trafficAccessToken"),
            preview_domain=(r.get("network") or {}).get("previewDomain"),
            preview_scheme=(r.get("network") or {}).get("previewScheme", "http"),
        )


@dataclass(frozen=True)
class EntryInfo:
    """A file system entry of a sandbox (``lstat``: a symlink is reported as itself)."""

    name: str
    path: str
    type: str
    """One of :data:`EntryType`: ``file``, ``dir``, ``symlink``, ``other``."""
    size: int
    mode: int
    """Permission bits (e.g. ``0o644``)."""
    modified_time: datetime
    symlink_target: Optional[str] = None

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "EntryInfo":
        """From the API's ``Entry`` object."""
        return cls(
            name=r["name"],
            path=r["path"],
            type=r["type"],
            size=r["size"],
            mode=r["mode"],
            modified_time=datetime_from_ms(r["mtimeMs"]),
            symlink_target=r.get("symlinkTarget"),
        )


@dataclass(frozen=True)
class FilesystemEvent:
    """A change in a watched directory (``files.watch_dir``).

    ``type`` is ``create``, ``write``, ``remove``, ``rename`` (the old name of a rename; the new
    one is a ``create``), ``chmod`` or ``overflow`` (events were dropped: ``dropped`` of them,
    -1 when the guest kernel's queue overflowed). ``name`` is relative to the watched directory.
    """

    type: str
    name: str
    dropped: Optional[int] = None


@dataclass(frozen=True)
class WriteInfo:
    """The result of writing one file."""

    path: str
    size: int
    """Bytes written by this call (with ``append=True``, not the size of the whole file)."""


@dataclass(frozen=True)
class WriteEntry:
    """One file of a multi-file :meth:`Filesystem.write`."""

    path: str
    data: FileData


@dataclass(frozen=True)
class CommandResult:
    """How a command ended, with all its output."""

    pid: int
    exit_code: Optional[int]
    """Exit status; ``-1`` when a signal ended the process (see :attr:`signal`)."""
    signal: Optional[str]
    """Signal that ended the process, e.g. ``"SIGKILL"``."""
    stdout: str
    stderr: str
    timed_out: bool = False
    lost_bytes: int = 0
    """Output bytes the server dropped because this client fell more than 4 MiB behind (stdout and
    stderr together); 0 when :attr:`stdout` and :attr:`stderr` are complete."""


@dataclass(frozen=True)
class ProcessInfo:
    """A process started through the API (running, or recently ended)."""

    pid: int
    cmd: str
    cwd: str
    tag: str
    started_at: datetime
    running: bool
    exit_code: Optional[int]
    """``None`` while running; ``-1`` when a signal ended the process."""
    signal: Optional[str]
    timed_out: bool

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "ProcessInfo":
        """From the API's ``ProcessInfo`` object."""
        return cls(
            pid=r["pid"],
            cmd=r["cmd"],
            cwd=r["cwd"],
            tag=r.get("tag", ""),
            started_at=datetime_from_ms(r["startedAtMs"]),
            running=r["running"],
            exit_code=r.get("exitCode"),
            signal=r.get("signal"),
            timed_out=bool(r.get("timedOut", False)),
        )


@dataclass(frozen=True)
class CompatibilityMismatch:
    """A requirement of a snapshot that this server's host does not meet."""

    field: str
    """The requirement, e.g. ``"cpuModel"`` or ``"kernelRelease"``."""
    snapshot: Union[str, int, float]
    """Its value in the snapshot."""
    host: Union[str, int, float]
    """Its value on this host."""


@dataclass(frozen=True)
class Compatibility:
    """Whether this server's host can restore a snapshot (:meth:`Snapshot.compatibility`)."""

    snapshot_id: str
    compatible: bool
    mismatches: list[CompatibilityMismatch]
    """The snapshot's requirements that this host does not meet (empty when compatible)."""
    requirements: dict[str, Union[str, int, float]]
    """Everything the snapshot requires of a host (CPU model, kernel, QEMU version...)."""

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "Compatibility":
        """From the API's ``Compatibility`` object."""
        return cls(
            snapshot_id=r["snapshotId"],
            compatible=r["compatible"],
            mismatches=[CompatibilityMismatch(field=m["field"], snapshot=m["snapshot"], host=m["host"]) for m in r.get("mismatches") or []],
            requirements=dict(r.get("requirements") or {}),
        )


@dataclass(frozen=True)
class SandboxMetrics:
    """One metrics sample of a running sandbox (:meth:`Sandbox.get_metrics`)."""

    timestamp: datetime
    cpu_used_pct: float
    """CPU use since the previous sample, % of all its vCPUs (0-100)."""
    cpu_count: int
    mem_used_bytes: int
    """Guest view: MemTotal - MemAvailable."""
    mem_total_bytes: int
    host_mem_bytes: Optional[int]
    """Host memory of its VM (the QEMU process's PSS); ``None`` when it could not be read."""
    disk_used_bytes: int
    """Bytes its disk overlays hold on the host (what it wrote)."""
    disk_total_bytes: int

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "SandboxMetrics":
        """From the API's ``MetricsSample`` object."""
        ts = parse_datetime(r["timestamp"])
        assert ts is not None
        return cls(
            timestamp=ts,
            cpu_used_pct=float(r["cpuUsedPct"]),
            cpu_count=int(r["cpuCount"]),
            mem_used_bytes=int(r["memUsedBytes"]),
            mem_total_bytes=int(r["memTotalBytes"]),
            host_mem_bytes=r.get("hostMemBytes"),
            disk_used_bytes=int(r["diskUsedBytes"]),
            disk_total_bytes=int(r["diskTotalBytes"]),
        )


@dataclass(frozen=True)
class SandboxEvent:
    """One lifecycle event (:meth:`Sandbox.events`)."""

    id: int
    """Monotonic: resume a stream after it with ``last_event_id``."""
    type: str
    """``created``, ``paused``, ``resumed``, ``snapshotted``, ``forked``, ``killed``, ``failed`` or ``timed_out``."""
    sandbox_id: str
    at: datetime
    data: dict[str, Any]

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "SandboxEvent":
        """From the JSON ``data`` of an SSE event."""
        at = parse_datetime(r["at"])
        assert at is not None
        return cls(id=int(r["id"]), type=r["type"], sandbox_id=r["sandboxId"], at=at, data=dict(r.get("data") or {}))
