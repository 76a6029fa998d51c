"""Python SDK of nullspace: disposable Linux sandbox VMs on your own server.

Standard library only. Example::

    from nullspace import Sandbox

    sandbox = Sandbox.create(template="base")
    sandbox.files.write("/workspace/state.txt", "baseline\\n")
    print(sandbox.files.read("/workspace/state.txt"))
    print(sandbox.commands.run("python3 -c 'print(6*7)'").stdout)
    sandbox.kill()

Templates as code: ``Template().from_template("base").apt_install([...]).set_start_cmd(...)``,
then ``Template.build(template, name=...)``; see :class:`Template`.

Reusable snapshots: ``snapshot = sandbox.create_snapshot()``, then
``Sandbox.create(snapshot_id=snapshot.id)`` as many times as needed; see :class:`Snapshot`.

Configuration: ``NULLSPACE_API_URL`` (default ``http://127.0.0.1:7070``), ``NULLSPACE_API_KEY``
(default: the local server's key in ``$NULLSPACE_DATA_DIR/api-key``), or the ``api_url`` and
``api_key`` arguments of :meth:`Sandbox.create` and friends.
"""

from .commands import CommandHandle, Commands
from .connection import DEFAULT_API_URL, DEFAULT_REQUEST_TIMEOUT, ConnectionConfig
from .errors import (
    AuthenticationError,
    ConflictError,
    FileNotFoundError,
    InvalidArgumentError,
    NotEnoughSpaceError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ProcessNotFoundError,
    RateLimitError,
    SandboxError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    ServiceUnavailableError,
    SnapshotNotFoundError,
    TemplateNotFoundError,
    VolumeNotFoundError,
    TimeoutError,
    TemplateBuildError,
    error_from_response,
)
from .filesystem import FileStream, Filesystem, WatchHandle
from .models import (
    CommandResult,
    Compatibility,
    CompatibilityMismatch,
    EntryInfo,
    FilesystemEvent,
    ProcessInfo,
    SandboxEvent,
    SandboxInfo,
    SandboxMetrics,
    WriteEntry,
    WriteInfo,
)
from .pagination import Paginator
from .pty import Pty, PtyHandle
from .sandbox import Sandbox, SandboxPaginator
from .snapshot import Snapshot, SnapshotPaginator
from .template import Template, TemplateInfo, wait_for_command, wait_for_file, wait_for_port
from .volume import Volume

__version__ = "0.1.0"

__all__ = [
    "Sandbox",
    "SandboxPaginator",
    "SandboxInfo",
    "SandboxMetrics",
    "SandboxEvent",
    "Snapshot",
    "SnapshotPaginator",
    "Volume",
    "Template",
    "TemplateInfo",
    "wait_for_port",
    "wait_for_command",
    "wait_for_file",
    "Compatibility",
    "CompatibilityMismatch",
    "Paginator",
    "Filesystem",
    "FileStream",
    "EntryInfo",
    "WriteInfo",
    "WriteEntry",
    "Commands",
    "Pty",
    "PtyHandle",
    "WatchHandle",
    "FilesystemEvent",
    "CommandHandle",
    "CommandResult",
    "ProcessInfo",
    "ConnectionConfig",
    "DEFAULT_API_URL",
    "DEFAULT_REQUEST_TIMEOUT",
    "SandboxError",
    "AuthenticationError",
    "InvalidArgumentError",
    "NotFoundError",
    "SandboxNotFoundError",
    "TemplateNotFoundError",
    "FileNotFoundError",
    "ProcessNotFoundError",
    "SnapshotNotFoundError",
    "VolumeNotFoundError",
    "ConflictError",
    "SandboxNotRunningError",
    "PermissionDeniedError",
    "PayloadTooLargeError",
    "RateLimitError",
    "ServiceUnavailableError",
    "NotEnoughSpaceError",
    "TimeoutError",
    "TemplateBuildError",
    "error_from_response",
]
