"""Errors of the nullspace SDK.

Every error the SDK raises is a :class:`SandboxError` carrying the server's stable ``code`` (or an
SDK code such as ``request_timeout`` or ``connection_failed``), the HTTP ``status`` when there was
one, and the server's ``details``. :func:`error_from_response` is the one place that maps an API
error to a class.

Two classes deliberately shadow Python built-ins inside this module: :class:`FileNotFoundError` and
:class:`TimeoutError`. Import them qualified (``from nullspace import errors``) or under an alias
when you also need the built-ins.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = [
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


class SandboxError(Exception):
    """Base class of every SDK error.

    Attributes:
        message: Human-readable description.
        code: Stable machine-readable code (``sandbox_not_found``, ``request_timeout``, ...).
        status: HTTP status of the failed request, or ``None`` when there was no HTTP answer.
        details: Extra fields the server sent (``{"path": ...}``, ``{"field": ...}``, ...).
    """

    def __init__(
        self,
        message: str,
        code: str | None = None,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: str = code if code is not None else "sandbox_error"
        self.status: int | None = status
        self.details: dict[str, Any] = dict(details) if details else {}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, status={self.status!r})"


class AuthenticationError(SandboxError):
    """401: no or wrong API key."""


class InvalidArgumentError(SandboxError):
    """400: a request field is malformed."""


class NotFoundError(SandboxError):
    """404 of any kind."""


class SandboxNotFoundError(NotFoundError):
    """No sandbox with this id."""


class TemplateNotFoundError(NotFoundError):
    """No template with this name on the server."""


class FileNotFoundError(NotFoundError):  # noqa: A001 - deliberately shadows the built-in
    """No such file or directory in the sandbox."""


class ProcessNotFoundError(NotFoundError):
    """No process with this pid in the sandbox."""


class SnapshotNotFoundError(NotFoundError):
    """No snapshot with this id."""


class VolumeNotFoundError(NotFoundError):
    """No volume with this name."""


class ConflictError(SandboxError):
    """409: the sandbox (or target) is not in a state that allows the operation."""


class SandboxNotRunningError(ConflictError):
    """The sandbox is not running (killed, failed, paused...)."""


class PermissionDeniedError(SandboxError):
    """403."""


class PayloadTooLargeError(SandboxError):
    """413: the request body (for example an upload) is too large."""


class RateLimitError(SandboxError):
    """429: the server refuses more sandboxes (admission control)."""


class ServiceUnavailableError(SandboxError):
    """503: the server or the sandbox's agent is unavailable, or memory is short."""


class NotEnoughSpaceError(SandboxError):
    """507: no space left (host data disk or the sandbox's disk)."""


class TimeoutError(SandboxError):  # noqa: A001 - deliberately shadows the built-in
    """A request or a command ran out of time.

    ``code`` is ``request_timeout`` for an HTTP request, ``command_timeout`` for a command killed
    after its ``timeout_ms``; for the latter, ``result`` holds the
    :class:`~nullspace.models.CommandResult` with the output so far.
    """

    def __init__(
        self,
        message: str,
        code: str | None = None,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        result: Any = None,
    ) -> None:
        super().__init__(message, code, status, details)
        self.result: Any = result


class TemplateBuildError(SandboxError):
    """A template build that failed after it started: a step failed, the ready check timed out, the
    VM failed.

    ``code`` comes from the build's error event (``template_build_failed``,
    ``template_ready_timeout``, ...).

    Attributes:
        step: The step it failed at (1-based), or ``None`` when no step was running.
        exit_code: The failed command's exit code, or ``None``.
        output: The end of its output (the server keeps the last 4 KiB).
    """

    def __init__(
        self,
        message: str,
        code: str | None = None,
        status: int | None = None,
        details: Mapping[str, Any] | None = None,
        step: int | None = None,
        exit_code: int | None = None,
        output: str = "",
    ) -> None:
        super().__init__(message, code if code is not None else "template_build_failed", status, details)
        self.step: int | None = step
        self.exit_code: int | None = exit_code
        self.output: str = output


_BY_CODE: dict[str, type[SandboxError]] = {
    "sandbox_not_found": SandboxNotFoundError,
    "template_not_found": TemplateNotFoundError,
    "file_not_found": FileNotFoundError,
    "process_not_found": ProcessNotFoundError,
    "snapshot_not_found": SnapshotNotFoundError,
    "volume_not_found": VolumeNotFoundError,
    "sandbox_not_running": SandboxNotRunningError,
}

_BY_STATUS: dict[int, type[SandboxError]] = {
    400: InvalidArgumentError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
    507: NotEnoughSpaceError,
}


def error_from_response(status: int, body: Any) -> SandboxError:
    """Builds the error for an API error answer.

    ``body`` is the parsed JSON body (``{"error": {"code", "message", "details"}}``) or anything
    else (``None``, a string...) when the answer was not such a body. The class is chosen by the
    error code first (``sandbox_not_found`` -> :class:`SandboxNotFoundError`...), then by the HTTP
    status (404 -> :class:`NotFoundError`...), else :class:`SandboxError`.
    """
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        err = {}
    code = err.get("code")
    if not isinstance(code, str) or not code:
        code = f"http_{status}"
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"HTTP {status}"
    details = err.get("details")
    if not isinstance(details, dict):
        details = {}
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or SandboxError
    return cls(message, code=code, status=status, details=details)
