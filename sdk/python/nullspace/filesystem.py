"""The file system of a sandbox: ``sandbox.files``."""

from __future__ import annotations

import urllib.parse
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping, Optional, Sequence, Union, overload

from . import errors
from .connection import ApiClient, Response
from .models import EntryInfo, FileData, FilesystemEvent, WriteEntry, WriteInfo
from .pty import _error_event, _Follower, open_stream

__all__ = ["Filesystem", "FileStream"]

_CHUNK = 64 * 1024


class FileStream:
    """The content of a sandbox file, as an iterator of ``bytes`` chunks read as they arrive.

    Iterate it to the end, or :meth:`close` it (or use it as a context manager) to stop early.
    """

    def __init__(self, response: Response, chunk_size: int = _CHUNK) -> None:
        self._response = response
        self._chunks = response.iter_bytes(chunk_size)

    def __iter__(self) -> "FileStream":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def read(self) -> bytes:
        """The rest of the content at once."""
        return b"".join(self._chunks)

    def close(self) -> None:
        """Stops reading and closes the connection."""
        self._chunks.close()
        self._response.close()

    def __enter__(self) -> "FileStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _file_chunks(f: Any) -> Iterator[bytes]:
    """Reads a file-like object chunk by chunk (text is encoded as UTF-8)."""
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        yield chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)


def _iter_chunks(items: Iterable[Any]) -> Iterator[bytes]:
    for chunk in items:
        if isinstance(chunk, str):
            yield chunk.encode("utf-8")
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            yield bytes(chunk)
        else:
            raise TypeError(f"file data chunks must be bytes or str, not {type(chunk).__name__}")


def _body(data: FileData) -> tuple[Union[bytes, Iterable[bytes]], bool]:
    """The request body for file data, and whether it is streamed."""
    if data is None:
        return b"", False
    if isinstance(data, str):
        return data.encode("utf-8"), False
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), False
    if hasattr(data, "read"):
        return _file_chunks(data), True
    if isinstance(data, Iterable):
        return _iter_chunks(data), True
    raise TypeError(f"cannot write {type(data).__name__}: expected str, bytes, a file-like object or an iterable of bytes")


class WatchHandle:
    """A running watch of a directory (a daemon thread hands its events to ``on_event``)."""

    def __init__(
        self,
        response: Response,
        path: str,
        on_event: Callable[[FilesystemEvent], Any],
        on_exit: Optional[Callable[[Optional[BaseException]], Any]],
    ) -> None:
        events, _ = open_stream(response, "watching")

        def handle(ev: dict[str, Any]) -> tuple[bool, Any]:
            kind = ev.get("type")
            if kind == "end":
                return True, None
            if kind == "error":
                raise _error_event(ev)
            dropped = ev.get("dropped")
            on_event(FilesystemEvent(type=str(kind), name=str(ev.get("name", "")), dropped=None if dropped is None else int(dropped)))
            return False, None

        self._follower = _Follower(response, events, f"nullspace-watch-{path}", handle, stop_is_end=True, on_exit=on_exit)

    def stop(self) -> None:
        """Stops watching."""
        self._follower.stop()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits for the watch to end: returns when it was stopped or its directory removed.

        Raises:
            SandboxError: what ended it (``sandbox_not_running`` when the sandbox was killed or paused).
        """
        self._follower.wait(timeout)


class Filesystem:
    """The file system of a sandbox. Paths are absolute guest paths; content streams both ways.

    Obtained as ``sandbox.files``.
    """

    def __init__(self, api: ApiClient, sandbox_id: str) -> None:
        self._api = api
        self._sandbox_id = sandbox_id

    @property
    def _base(self) -> str:
        return f"/v1/sandboxes/{urllib.parse.quote(self._sandbox_id, safe='')}/files"

    @overload
    def read(self, path: str, format: Literal["text"] = "text") -> str: ...
    @overload
    def read(self, path: str, format: Literal["bytes"]) -> bytes: ...
    @overload
    def read(self, path: str, format: Literal["stream"]) -> FileStream: ...

    def read(self, path: str, format: str = "text") -> Union[str, bytes, FileStream]:
        """Reads a file.

        Args:
            path: Absolute path in the sandbox.
            format: ``"text"`` (decoded as UTF-8, invalid bytes replaced), ``"bytes"``, or
                ``"stream"`` for a :class:`FileStream` (an iterator of ``bytes`` chunks, with no
                time limit once the answer started).

        Raises:
            FileNotFoundError: no such file.
        """
        if format not in ("text", "bytes", "stream"):
            raise ValueError(f'format must be "text", "bytes" or "stream", not {format!r}')
        if format == "stream":
            return FileStream(self._api.request("GET", self._base, query={"path": path}, timeout=None))
        data = self._api.request("GET", self._base, query={"path": path}).read()
        return data if format == "bytes" else data.decode("utf-8", errors="replace")

    @overload
    def write(self, path: str, data: FileData, mode: Optional[int] = None, append: bool = False) -> WriteInfo: ...
    @overload
    def write(self, path: Sequence[Union[WriteEntry, Mapping[str, Any]]]) -> list[WriteInfo]: ...

    def write(
        self,
        path: Union[str, Sequence[Union[WriteEntry, Mapping[str, Any]]]],
        data: FileData = None,
        mode: Optional[int] = None,
        append: bool = False,
    ) -> Union[WriteInfo, list[WriteInfo]]:
        """Writes one file (missing parent directories are created), or several.

        Args:
            path: Absolute path in the sandbox, or a list of :class:`WriteEntry` / dicts
                ``{"path": ..., "data": ...}`` to write several files (then returns a list).
            data: ``str`` (written as UTF-8), ``bytes``, a file-like object (read in chunks) or an
                iterable of ``bytes`` chunks. File-like objects and iterables are streamed with
                chunked transfer encoding, never held whole in memory, and without time limit.
            mode: Permission bits of a new file (e.g. ``0o755``).
            append: Append to the file instead of replacing it.

        Returns:
            :class:`WriteInfo` (path and size of the file), or a list of them.
        """
        if not isinstance(path, str):
            if data is not None:
                raise TypeError("write(files) takes no data: each entry has its own")
            out: list[WriteInfo] = []
            for entry in path:
                if isinstance(entry, WriteEntry):
                    out.append(self.write(entry.path, entry.data, mode=mode, append=append))
                else:
                    out.append(self.write(entry["path"], entry.get("data"), mode=mode, append=append))
            return out
        body, streamed = _body(data)
        r = self._api.json(
            "PUT",
            self._base,
            query={"path": path, "mode": mode, "append": True if append else None},
            headers={"Content-Type": "application/octet-stream"},
            body=body,
            **({"timeout": None} if streamed else {}),
        )
        return WriteInfo(path=str(r.get("path", path)), size=int(r.get("size", 0)))

    def list(self, path: str, depth: int = 1) -> list[EntryInfo]:
        """Lists a directory; with ``depth`` > 1, also the entries of its subdirectories.

        Raises:
            FileNotFoundError: no such directory.
        """
        r = self._api.json("GET", f"{self._base}/list", query={"path": path, "depth": depth})
        return [EntryInfo.from_json(e) for e in r["entries"]]

    def get_info(self, path: str) -> EntryInfo:
        """Information about a path (a symlink is described itself, not its target).

        Raises:
            FileNotFoundError: no such path.
        """
        return EntryInfo.from_json(self._api.json("GET", f"{self._base}/stat", query={"path": path}))

    def exists(self, path: str) -> bool:
        """Whether the path exists."""
        try:
            self.get_info(path)
            return True
        except errors.FileNotFoundError:
            return False

    def make_dir(self, path: str) -> bool:
        """Creates a directory and its parents. Returns ``False`` when it already existed."""
        r = self._api.json("POST", f"{self._base}/mkdir", json={"path": path, "parents": True})
        return bool(r["created"])

    def rename(self, old_path: str, new_path: str) -> EntryInfo:
        """Renames or moves a path (replacing an existing target); returns the moved entry."""
        self._api.json("POST", f"{self._base}/rename", json={"from": old_path, "to": new_path})
        return self.get_info(new_path)

    def watch_dir(
        self,
        path: str,
        on_event: Callable[[FilesystemEvent], Any],
        recursive: bool = False,
        on_exit: Optional[Callable[[Optional[BaseException]], Any]] = None,
    ) -> WatchHandle:
        """Watches a directory (with ``recursive``, the directories below it too); returns once the
        watch is set. ``on_event`` gets each change; ``on_exit`` the error that ended the watch
        (``None`` when it was stopped or the directory removed).

        Raises:
            FileNotFoundError: no such directory.
        """
        res = self._api.request("GET", f"{self._base}/watch", query={"path": path, "recursive": recursive}, timeout=None)
        return WatchHandle(res, path, on_event, on_exit)

    def remove(self, path: str, recursive: bool = True) -> None:
        """Removes a file or a directory (with its content unless ``recursive=False``).

        Raises:
            FileNotFoundError: no such path.
        """
        self._api.json("DELETE", self._base, query={"path": path, "recursive": recursive})
