"""Commands of a sandbox: ``sandbox.commands``."""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import threading
import urllib.parse
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Union, overload

from .connection import ApiClient, Response, iter_ndjson
from .errors import ProcessNotFoundError, SandboxError, TimeoutError, error_from_response
from .models import CommandResult, ProcessInfo

__all__ = ["Commands", "CommandHandle", "OutputCallback"]

OutputCallback = Callable[[str], Any]
"""Called with each piece of decoded text as it arrives."""


class CommandOutput:
    """Accumulates a command's stdout and stderr from base64 chunks.

    Each stream has its own incremental UTF-8 decoder, so a character split across chunks is
    decoded whole; invalid bytes become U+FFFD. Callbacks get each decoded piece as it arrives.
    Safe to read from another thread while a follower thread adds output.
    """

    def __init__(self, on_stdout: Optional[OutputCallback] = None, on_stderr: Optional[OutputCallback] = None) -> None:
        self._callbacks = {"stdout": on_stdout, "stderr": on_stderr}
        self._decoders = {k: codecs.getincrementaldecoder("utf-8")(errors="replace") for k in ("stdout", "stderr")}
        self._parts: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._lock = threading.Lock()
        self._finished = False

    def add(self, kind: str, data_b64: str) -> None:
        """Adds one chunk (``kind`` is ``"stdout"`` or ``"stderr"``) given in base64."""
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError, TypeError) as e:
            raise SandboxError(f"malformed base64 {kind} chunk in a command stream", code="invalid_response") from e
        self._emit(kind, data, final=False)

    def finish(self) -> None:
        """Flushes the decoders (an incomplete trailing sequence becomes U+FFFD)."""
        if self._finished:
            return
        self._finished = True
        for kind in ("stdout", "stderr"):
            self._emit(kind, b"", final=True)

    def _emit(self, kind: str, data: bytes, final: bool) -> None:
        with self._lock:
            text = self._decoders[kind].decode(data, final)
            if text:
                self._parts[kind].append(text)
        if text:
            cb = self._callbacks[kind]
            if cb is not None:
                cb(text)

    @property
    def stdout(self) -> str:
        """Standard output decoded so far."""
        with self._lock:
            return "".join(self._parts["stdout"])

    @property
    def stderr(self) -> str:
        """Standard error decoded so far."""
        with self._lock:
            return "".join(self._parts["stderr"])


def consume_events(events: Iterable[Mapping[str, Any]], out: CommandOutput, pid_hint: int = 0) -> CommandResult:
    """Follows a command's NDJSON events to its end.

    Returns the :class:`CommandResult` whatever the exit code.

    Raises:
        TimeoutError: code ``command_timeout`` when the command was killed after its timeout
            (``.result`` holds the result).
        SandboxError: an ``error`` event (class by its code), or ``stream_ended`` when the stream
            ended without an exit status (sandbox killed?).
    """
    pid = pid_hint
    lost = 0
    for ev in events:
        kind = ev.get("type")
        if kind in ("stdout", "stderr"):
            out.add(str(kind), str(ev.get("data", "")))
        elif kind == "start":
            pid = int(ev.get("pid") or pid)
        elif kind == "end":
            out.finish()
            result = CommandResult(
                pid=int(ev.get("pid") or pid),
                exit_code=ev.get("exitCode"),
                signal=ev.get("signal"),
                stdout=out.stdout,
                stderr=out.stderr,
                timed_out=ev.get("timedOut") is True,
                lost_bytes=lost,
            )
            if result.timed_out:
                raise TimeoutError(f"command (pid {result.pid}) was killed after its timeout", code="command_timeout", result=result)
            return result
        elif kind == "error":
            raise error_from_response(503, {"error": {"code": str(ev.get("code")), "message": str(ev.get("message"))}})
        elif kind == "lost":
            # output the server dropped while this client was more than 4 MiB behind
            lost += int(ev.get("bytes") or 0)
        # unknown events are ignored
    out.finish()
    raise SandboxError("the command output stream ended without an exit status (sandbox killed?)", code="stream_ended")


class CommandHandle:
    """A command running in the background (from ``run(..., background=True)`` or ``connect``).

    A daemon thread follows its output stream, so callbacks fire live and :attr:`stdout` /
    :attr:`stderr` grow while it runs.
    """

    def __init__(
        self,
        commands: "Commands",
        pid: int,
        attach: Callable[[], Response],
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> None:
        """Internal: use ``Commands.run(..., background=True)`` or ``Commands.connect``.

        ``attach`` opens the output stream; it is called in the follower thread because the
        server sends the stream's headers only with the process's first output.
        """
        self.pid: int = pid
        self._commands = commands
        self._attach = attach
        self._out = CommandOutput(on_stdout, on_stderr)
        self._result: Optional[CommandResult] = None
        self._error: Optional[BaseException] = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"nullspace-command-{pid}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        response: Optional[Response] = None
        try:
            response = self._attach()
            self._result = consume_events(iter_ndjson(response.iter_bytes()), self._out, self.pid)
        except BaseException as e:  # handed to wait()
            self._error = e
        finally:
            if response is not None:
                response.close()
            self._done.set()

    @property
    def stdout(self) -> str:
        """Standard output received so far."""
        return self._out.stdout

    @property
    def stderr(self) -> str:
        """Standard error received so far."""
        return self._out.stderr

    def wait(self) -> CommandResult:
        """Waits for the process to end and returns its result, whatever the exit code.

        Raises:
            TimeoutError: code ``command_timeout`` when it outlived its ``timeout_ms``
                (``.result`` holds the result).
            SandboxError: ``stream_ended`` when the sandbox went away first.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("wait() cannot be called from an output callback of the same command")
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def kill(self, signal: str = "SIGKILL") -> bool:
        """Signals the process group. Returns ``False`` when the process is no longer running."""
        return self._commands.kill(self.pid, signal)

    def send_stdin(self, data: str, close: bool = False) -> None:
        """Writes text to the process's stdin (it must have been started with ``stdin=True``);
        ``close=True`` closes stdin afterwards."""
        self._commands.send_stdin(self.pid, data, close=close)

    def __repr__(self) -> str:
        return f"CommandHandle(pid={self.pid}, done={self._done.is_set()})"


class Commands:
    """Commands of a sandbox, run with ``/bin/bash -c`` (default cwd ``/workspace``, user root).

    Obtained as ``sandbox.commands``.
    """

    def __init__(self, api: ApiClient, sandbox_id: str) -> None:
        self._api = api
        self._sandbox_id = sandbox_id

    @property
    def _base(self) -> str:
        return f"/v1/sandboxes/{urllib.parse.quote(self._sandbox_id, safe='')}/commands"

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        cwd: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        stdin: Optional[bool] = None,
        input: Optional[str] = None,
        tag: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> CommandResult: ...
    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        cwd: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        stdin: Optional[bool] = None,
        input: Optional[str] = None,
        tag: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        cwd: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        timeout_ms: Optional[int] = None,
        stdin: Optional[bool] = None,
        input: Optional[str] = None,
        tag: Optional[str] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> Union[CommandResult, CommandHandle]:
        """Runs a command with ``/bin/bash -c``.

        In the foreground (default) it waits for the end and returns a :class:`CommandResult`
        whatever the exit code. With ``background=True`` it returns a :class:`CommandHandle` as
        soon as the process started.

        Args:
            cmd: Shell command line.
            cwd: Working directory (default ``/workspace``).
            envs: Extra environment variables (on top of the sandbox's).
            user: User to run as (default root).
            timeout_ms: Kill the command after this long; ``0`` = never; default 60000.
            stdin: Keep stdin open for :meth:`send_stdin`.
            input: Text written to stdin (then closed unless ``stdin=True``).
            tag: Free label, reported by :meth:`list`.
            on_stdout: Called with decoded stdout text as it arrives.
            on_stderr: Called with decoded stderr text as it arrives.

        Raises:
            TimeoutError: code ``command_timeout`` when a foreground command was killed after
                its timeout (``.result`` holds the output so far).
            SandboxNotRunningError: the sandbox is not running.
        """
        body: dict[str, Any] = {"cmd": cmd, "background": bool(background)}
        for key, value in (
            ("cwd", cwd),
            ("envs", dict(envs) if envs is not None else None),
            ("user", user),
            ("timeoutMs", timeout_ms),
            ("stdin", stdin),
            ("input", input),
            ("tag", tag),
        ):
            if value is not None:
                body[key] = value
        if background:
            r = self._api.json("POST", self._base, json=body)
            pid = int(r["pid"])
            return CommandHandle(self, pid, functools.partial(self._attach, pid), on_stdout, on_stderr)
        res = self._api.request("POST", self._base, json=body, timeout=None)
        try:
            return consume_events(iter_ndjson(res.iter_bytes()), CommandOutput(on_stdout, on_stderr))
        finally:
            res.close()

    def connect(
        self,
        pid: int,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
    ) -> CommandHandle:
        """Follows a process started earlier; its output is replayed from the start while the
        sandbox still holds it.

        Raises:
            ProcessNotFoundError: no such process.
        """
        pid = int(pid)
        if not any(p.pid == pid for p in self.list()):
            raise ProcessNotFoundError(f"process {pid} not found", code="process_not_found", details={"pid": pid})
        return CommandHandle(self, pid, functools.partial(self._attach, pid), on_stdout, on_stderr)

    def _attach(self, pid: int) -> Response:
        return self._api.request("GET", f"{self._base}/{pid}/stream", query={"replay": True}, timeout=None)

    def list(self) -> list[ProcessInfo]:
        """Processes started through the API: running ones, and recently ended ones."""
        r = self._api.json("GET", self._base)
        return [ProcessInfo.from_json(p) for p in r["processes"]]

    def kill(self, pid: int, signal: str = "SIGKILL") -> bool:
        """Signals a process group (``SIGKILL``, ``SIGTERM``, ``SIGINT``, ...).

        Returns ``False`` when there is no such running process.
        """
        try:
            self._api.json("POST", f"{self._base}/{int(pid)}/kill", json={"signal": signal})
            return True
        except SandboxError as e:
            if e.code in ("process_not_found", "process_not_running"):
                return False
            raise

    def send_stdin(self, pid: int, data: str, close: bool = False) -> None:
        """Writes text to the stdin of a process started with ``stdin=True``; ``close=True``
        closes it afterwards."""
        self._api.json("POST", f"{self._base}/{int(pid)}/stdin", json={"data": data, "close": close})
