"""Terminals of a sandbox: ``sandbox.pty``."""

from __future__ import annotations

import base64
import threading
import urllib.parse
from typing import Any, Callable, Iterator, Mapping, Optional, Union

from .connection import ApiClient, Response, iter_ndjson
from .errors import SandboxError, error_from_response

__all__ = ["Pty", "PtyHandle", "DataCallback"]

DataCallback = Callable[[bytes], Any]
"""Called with each piece of the terminal's output (bytes, escape sequences included) as it arrives."""


class _Follower:
    """A daemon thread that follows an NDJSON stream to its end; :meth:`stop` closes it."""

    def __init__(
        self,
        response: Response,
        events: Iterator[dict[str, Any]],
        name: str,
        handle: Callable[[dict[str, Any]], Any],
        stop_is_end: bool = False,
        on_exit: Optional[Callable[[Optional[BaseException]], Any]] = None,
    ) -> None:
        self._stop_is_end = stop_is_end
        self._on_exit = on_exit
        self._response = response
        self._events = events
        self._handle = handle
        self._stopped = False
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for ev in self._events:
                ended, value = self._handle(ev)
                if ended:
                    self.result = value
                    return
            if not self._stopped:
                raise SandboxError("the stream ended without its end event (the sandbox went away?)", code="stream_ended")
        except BaseException as e:  # handed to wait()
            if not self._stopped:
                self.error = e
        finally:
            self._response.close()
            self.done.set()
            if self._on_exit is not None:
                self._on_exit(self.error)

    def stop(self) -> None:
        self._stopped = True
        if threading.current_thread() is self.thread:
            self._response.close()
            return
        # (closing the response while the thread reads it would wait for that read)
        self._response.abort()
        self.done.wait()

    def wait(self, timeout: Optional[float]) -> Any:
        if threading.current_thread() is self.thread:
            raise RuntimeError("wait() cannot be called from a callback of the same stream")
        if not self.done.wait(timeout):
            raise TimeoutError(f"still running after {timeout} s")
        if self.error is not None:
            raise self.error
        if self._stopped and self.result is None and not self._stop_is_end:
            raise SandboxError("disconnected from the stream before its end", code="stream_ended")
        return self.result


def _error_event(ev: Mapping[str, Any]) -> SandboxError:
    return error_from_response(503, {"error": {"code": str(ev.get("code")), "message": str(ev.get("message"))}})


def open_stream(response: Response, first_type: str) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
    """The events of an NDJSON answer and its first event, which must be of ``first_type``."""
    events = iter_ndjson(response.iter_bytes())
    try:
        first = next(events, None)
    except BaseException:
        response.close()
        raise
    if first is None or first.get("type") != first_type:
        response.close()
        raise SandboxError(f"the stream did not begin with its {first_type} event", code="invalid_response")
    return events, first


class PtyHandle:
    """A terminal this client follows (a daemon thread hands its output to ``on_data``).

    Its process lives in the sandbox: :meth:`disconnect` leaves it running, and
    ``sandbox.pty.connect(pid)`` follows it again.
    """

    def __init__(self, pty: "Pty", response: Response, on_data: Optional[DataCallback]) -> None:
        events, first = open_stream(response, "start")
        self.pid: int = int(first["pid"])
        #: Output bytes dropped for this client (it fell more than 4 MiB behind).
        self.lost_bytes = 0
        #: Once it ended: the signal that ended it (e.g. ``"SIGKILL"``), or None.
        self.signal: Optional[str] = None
        self._pty = pty

        def handle(ev: dict[str, Any]) -> tuple[bool, Any]:
            kind = ev.get("type")
            if kind == "data":
                if on_data is not None:
                    on_data(base64.b64decode(str(ev.get("data", ""))))
            elif kind == "lost":
                self.lost_bytes += int(ev.get("bytes") or 0)
            elif kind == "end":
                self.signal = ev.get("signal")
                code = ev.get("exitCode")
                return True, -1 if code is None else int(code)
            elif kind == "error":
                raise _error_event(ev)
            return False, None

        self._follower = _Follower(response, events, f"nullspace-pty-{self.pid}", handle)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Waits for the terminal's process to end; returns its exit code (-1 when a signal ended it).

        Raises:
            SandboxError: the stream failed (e.g. ``agent_unavailable`` when the sandbox was
                hibernated), or ``stream_ended`` after :meth:`disconnect`.
        """
        return int(self._follower.wait(timeout))

    def disconnect(self) -> None:
        """Stops following the terminal; it keeps running."""
        self._follower.stop()

    def send_input(self, data: Union[str, bytes]) -> None:
        """Types into the terminal (``"\\x03"`` is Ctrl-C)."""
        self._pty.send_input(self.pid, data)

    def resize(self, cols: int, rows: int) -> None:
        """Sets the window size."""
        self._pty.resize(self.pid, cols=cols, rows=rows)

    def kill(self, signal: str = "SIGKILL") -> bool:
        """Signals the terminal's process group and foreground job; ``False`` when it is not running."""
        return self._pty.kill(self.pid, signal)

    def __repr__(self) -> str:
        return f"PtyHandle(pid={self.pid}, done={self._follower.done.is_set()})"


class Pty:
    """Terminals of a sandbox: processes on a pseudo-terminal, the login shell by default.

    Obtained as ``sandbox.pty``.
    """

    def __init__(self, api: ApiClient, sandbox_id: str) -> None:
        self._api = api
        self._sandbox_id = sandbox_id

    @property
    def _base(self) -> str:
        return f"/v1/sandboxes/{urllib.parse.quote(self._sandbox_id, safe='')}/pty"

    def create(
        self,
        cols: int = 80,
        rows: int = 24,
        on_data: Optional[DataCallback] = None,
        *,
        cmd: Optional[str] = None,
        cwd: Optional[str] = None,
        envs: Optional[Mapping[str, str]] = None,
        user: Optional[str] = None,
        tag: Optional[str] = None,
    ) -> PtyHandle:
        """Starts a terminal and returns once it runs (``handle.pid``); its output goes to ``on_data``.

        Args:
            cmd: Run this with ``/bin/bash -c`` instead of the user's login shell.
        """
        body: dict[str, Any] = {"cols": cols, "rows": rows}
        for key, value in (("cmd", cmd), ("cwd", cwd), ("envs", dict(envs) if envs is not None else None), ("user", user), ("tag", tag)):
            if value is not None:
                body[key] = value
        return PtyHandle(self, self._api.request("POST", self._base, json=body, timeout=None), on_data)

    def connect(self, pid: int, on_data: Optional[DataCallback] = None) -> PtyHandle:
        """Follows a terminal started earlier: what the sandbox still holds of its output is replayed first."""
        return PtyHandle(self, self._api.request("GET", f"{self._base}/{int(pid)}/stream", query={"replay": True}, timeout=None), on_data)

    def send_input(self, pid: int, data: Union[str, bytes]) -> None:
        """Types into a terminal (a str is sent as UTF-8)."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._api.json("POST", f"{self._base}/{int(pid)}/input", json={"data": base64.b64encode(raw).decode()})

    def resize(self, pid: int, cols: int, rows: int) -> None:
        """Sets a terminal's window size (its programs get SIGWINCH)."""
        self._api.json("POST", f"{self._base}/{int(pid)}/resize", json={"cols": cols, "rows": rows})

    def kill(self, pid: int, signal: str = "SIGKILL") -> bool:
        """Signals a terminal's process group and foreground job; ``False`` when it is not running."""
        try:
            self._api.json("POST", f"{self._base}/{int(pid)}/kill", json={"signal": signal})
            return True
        except SandboxError as e:
            if e.code in ("process_not_found", "process_not_running"):
                return False
            raise
