"""Connection settings and the thin HTTP client of the nullspace API (standard library only).

:class:`ConnectionConfig` resolves where the server is and how to authenticate;
:class:`ApiClient` sends requests with ``Authorization: Bearer <key>``, applies the request
timeout, streams request bodies with chunked transfer encoding, and turns every failure into a
:class:`~nullspace.errors.SandboxError`. :func:`iter_ndjson` reads an NDJSON answer line by line.
"""

from __future__ import annotations

import builtins
import http.client
import json as _json
import os
import socket
import ssl
import urllib.parse
from typing import Any, Iterable, Iterator, Mapping, Optional, Union

from .errors import SandboxError, TimeoutError, error_from_response

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_DATA_DIR",
    "DEFAULT_REQUEST_TIMEOUT",
    "ConnectionConfig",
    "ApiClient",
    "Response",
    "iter_ndjson",
]

DEFAULT_API_URL = "http://127.0.0.1:7070"
DEFAULT_DATA_DIR = "/var/lib/nullspace/data"
DEFAULT_REQUEST_TIMEOUT = 120.0
"""Seconds allowed for each ordinary API request (not for command output or file streams)."""

USER_AGENT = "nullspace-python/0.1.0"

_CHUNK = 64 * 1024
_MAX_ERROR_BODY = 1024 * 1024

QueryValue = Union[str, int, float, bool, None, Iterable[str]]


def local_key_file() -> str:
    """Where a local server keeps its API key: ``$NULLSPACE_DATA_DIR/api-key``."""
    return os.path.join(os.environ.get("NULLSPACE_DATA_DIR") or DEFAULT_DATA_DIR, "api-key")


def _read_local_key() -> Optional[str]:
    try:
        with open(local_key_file(), "r", encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


class ConnectionConfig:
    """Where the server is and how to authenticate, resolved once per client.

    Args:
        api_url: Server URL; default ``$NULLSPACE_API_URL``, else ``http://127.0.0.1:7070``.
        api_key: API key; default ``$NULLSPACE_API_KEY``, else the key the local server keeps in
            ``$NULLSPACE_DATA_DIR/api-key`` (data dir default ``/var/lib/nullspace/data``).
        request_timeout: Seconds allowed for each API request (not for command output streams
            and file streams); default 120.

    Raises:
        SandboxError: code ``missing_api_key`` when no key can be found, ``invalid_api_url`` when
            the URL is not an http(s) URL.
    """

    def __init__(
        self,
        api_url: Optional[str] = None,
        api_key: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> None:
        url = (api_url or os.environ.get("NULLSPACE_API_URL") or DEFAULT_API_URL).rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SandboxError(f"invalid API URL {url!r}: expected http(s)://host[:port]", code="invalid_api_url")
        self.api_url: str = url
        key = api_key or os.environ.get("NULLSPACE_API_KEY") or _read_local_key()
        if not key:
            raise SandboxError(
                "no API key: set NULLSPACE_API_KEY or pass api_key "
                f"(the local server keeps its key in {local_key_file()})",
                code="missing_api_key",
            )
        self.api_key: str = key
        if request_timeout is not None and request_timeout <= 0:
            raise SandboxError("request_timeout must be a positive number of seconds", code="invalid_argument")
        self.request_timeout: float = float(request_timeout) if request_timeout is not None else DEFAULT_REQUEST_TIMEOUT

    def __repr__(self) -> str:
        return f"ConnectionConfig(api_url={self.api_url!r}, request_timeout={self.request_timeout!r})"


def _query_string(query: Optional[Mapping[str, QueryValue]]) -> str:
    pairs: list[tuple[str, str]] = []
    for k, v in (query or {}).items():
        if v is None:
            continue
        if isinstance(v, bool):
            pairs.append((k, "true" if v else "false"))
        elif isinstance(v, (str, int, float)):
            pairs.append((k, str(v)))
        else:
            pairs.extend((k, str(item)) for item in v)
    return urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote)


class _SourceError(Exception):
    """Wraps an exception raised by the caller's body iterable, to re-raise it unchanged."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _guarded(body: Iterable[bytes], failure: list[BaseException]) -> Iterator[bytes]:
    """Yields the caller's chunks, remembering an exception the caller's iterable raised."""
    it = iter(body)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            return
        except BaseException as e:  # the caller's source failed: not a connection problem
            failure.append(e)
            raise _SourceError(e) from e
        if chunk:
            yield chunk


class Response:
    """An HTTP answer whose body has not been read yet (streams).

    Iterate :meth:`iter_bytes` for the body chunk by chunk as it arrives, or call :meth:`read`.
    The connection is closed when the body has been read or on :meth:`close`.
    """

    def __init__(self, client: "ApiClient", conn: http.client.HTTPConnection, raw: http.client.HTTPResponse, what: str) -> None:
        self._client = client
        self._conn = conn
        self.raw = raw
        self.status: int = raw.status
        self.headers = raw.headers
        self._what = what

    def iter_bytes(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """Body chunks as they arrive (each at most ``chunk_size`` bytes); closes at the end."""
        expected = self.raw.length  # the Content-Length, when the answer had one (else None)
        received = 0
        try:
            while True:
                try:
                    chunk = self.raw.read1(chunk_size)
                except (socket.timeout, builtins.TimeoutError) as e:
                    raise TimeoutError(f"{self._what}: no data within the request timeout", code="request_timeout") from e
                except (OSError, http.client.HTTPException) as e:
                    raise SandboxError(
                        f"{self._what}: the connection to {self._client.config.api_url} broke: {e!r}",
                        code="connection_failed",
                    ) from e
                if not chunk:
                    if expected is not None and received < expected:
                        raise SandboxError(
                            f"{self._what}: the connection to {self._client.config.api_url} closed after {received} of {expected} bytes",
                            code="connection_failed",
                        )
                    return
                received += len(chunk)
                yield chunk
        finally:
            self.close()

    def read(self) -> bytes:
        """The whole body."""
        return b"".join(self.iter_bytes())

    def json(self) -> Any:
        """The body parsed as JSON (``None`` for an empty body, e.g. 204)."""
        data = self.read()
        if not data.strip():
            return None
        try:
            return _json.loads(data)
        except ValueError as e:
            raise SandboxError(f"{self._what}: the server answered malformed JSON: {e}", code="invalid_response", status=self.status) from e

    def abort(self) -> None:
        """Stops a stream that another thread is reading: its read ends, and it closes the connection."""
        sock = getattr(self._conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Closes the connection (stops a stream early)."""
        try:
            self.raw.close()
        finally:
            self._conn.close()

    def __enter__(self) -> "Response":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DEFAULT: Any = object()


class ApiClient:
    """Thin HTTP client of the nullspace API: auth, timeouts, errors mapped to SandboxError classes.

    Each request uses its own connection, so one client may be used from several threads.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        parts = urllib.parse.urlsplit(config.api_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._base_path = parts.path.rstrip("/")

    def url(self, path: str, query: Optional[Mapping[str, QueryValue]] = None) -> str:
        """Full URL of an API path (for messages)."""
        qs = _query_string(query)
        return self.config.api_url + path + (f"?{qs}" if qs else "")

    def _connect(self, connect_timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=connect_timeout, context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=connect_timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Optional[Mapping[str, QueryValue]] = None,
        json: Any = _DEFAULT,
        body: Union[bytes, Iterable[bytes], None] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = _DEFAULT,
    ) -> Response:
        """Sends a request and returns the answer with its body unread; raises on any error status.

        Args:
            json: A value sent as a JSON body.
            body: Raw bytes (sent with Content-Length) or an iterable of bytes chunks (streamed
                with chunked transfer encoding, never held whole in memory).
            timeout: Seconds allowed for each wait on the socket (connecting, sending, the
                answer); default the config's ``request_timeout``; ``None`` = no limit once
                connected (streams).
        """
        if timeout is _DEFAULT:
            timeout = self.config.request_timeout
        what = f"{method} {path}"
        target = self._base_path + path
        qs = _query_string(query)
        if qs:
            target += "?" + qs
        hdrs = {"Authorization": f"Bearer {self.config.api_key}", "User-Agent": USER_AGENT, "Accept": "*/*"}
        if headers:
            hdrs.update(headers)
        payload: Union[bytes, Iterable[bytes], None] = body
        if json is not _DEFAULT:
            hdrs["Content-Type"] = "application/json"
            payload = _json.dumps(json, separators=(",", ":")).encode("utf-8")
        source_failure: list[BaseException] = []
        if payload is not None and not isinstance(payload, (bytes, bytearray, memoryview)):
            payload = _guarded(payload, source_failure)
        elif payload is None and method in ("POST", "PUT", "PATCH"):
            payload = b""

        conn = self._connect(timeout if timeout is not None else self.config.request_timeout)
        try:
            try:
                conn.connect()
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            except (socket.timeout, builtins.TimeoutError) as e:
                raise TimeoutError(f"{what}: connecting to {self.config.api_url} timed out", code="request_timeout") from e
            except OSError as e:
                raise SandboxError(
                    f"cannot reach the nullspace server at {self.config.api_url}: {e.strerror or e!r}",
                    code="connection_failed",
                ) from e
            send_error: Optional[BaseException] = None
            try:
                conn.request(method, target, body=payload, headers=hdrs)
            except _SourceError as e:
                raise e.original from None
            except (socket.timeout, builtins.TimeoutError) as e:
                raise TimeoutError(f"request {what} timed out after {timeout} s", code="request_timeout") from e
            except (OSError, http.client.HTTPException) as e:
                # the server may have answered (an error) before taking the whole body
                send_error = e
            if source_failure:
                raise source_failure[0]
            try:
                raw = conn.getresponse()
            except (socket.timeout, builtins.TimeoutError) as e:
                raise TimeoutError(f"request {what} timed out after {timeout} s", code="request_timeout") from e
            except (OSError, http.client.HTTPException) as e:
                cause = send_error or e
                raise SandboxError(
                    f"{what}: the connection to {self.config.api_url} failed: {cause!r}",
                    code="connection_failed",
                ) from cause
        except BaseException:
            conn.close()
            raise
        res = Response(self, conn, raw, what)
        if raw.status >= 400:
            try:
                data = raw.read(_MAX_ERROR_BODY)
            except (OSError, http.client.HTTPException):
                data = b""
            finally:
                res.close()
            try:
                parsed: Any = _json.loads(data) if data else None
            except ValueError:
                parsed = None
            raise error_from_response(raw.status, parsed)
        if send_error is not None:
            res.close()
            raise SandboxError(
                f"{what}: the connection to {self.config.api_url} broke while sending: {send_error!r}",
                code="connection_failed",
            ) from send_error
        return res

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request`, then the answer's JSON body (``None`` for 204)."""
        return self.request(method, path, **kwargs).json()


def iter_ndjson(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Parses NDJSON arriving in arbitrary chunks: yields one dict per non-empty line as soon as
    its newline arrives (a last line without a newline is yielded at the end)."""
    pending: list[bytes] = []
    for chunk in chunks:
        pending.append(chunk)
        if b"\n" not in chunk:
            continue
        *lines, rest = b"".join(pending).split(b"\n")
        pending = [rest] if rest else []
        for line in lines:
            if line.strip():
                yield _parse_line(line)
    last = b"".join(pending)
    if last.strip():
        yield _parse_line(last)


def _parse_line(line: bytes) -> dict[str, Any]:
    try:
        value = _json.loads(line)
    except ValueError as e:
        raise SandboxError(f"malformed line in an NDJSON stream: {line[:200]!r}", code="invalid_response") from e
    if not isinstance(value, dict):
        raise SandboxError(f"unexpected line in an NDJSON stream: {line[:200]!r}", code="invalid_response")
    return value

