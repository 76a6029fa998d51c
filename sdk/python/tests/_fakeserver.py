"""A tiny scripted HTTP server (standard library) for the SDK's transport tests.

Routes map (method, path) to a function(request) -> (status, headers, body) where body is bytes
or an iterator of bytes (sent with chunked encoding, flushed chunk by chunk).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    chunked: bool
    chunk_sizes: list[int] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


Route = Callable[[Request], tuple]


def json_reply(status: int, value: Any) -> tuple:
    return status, {"Content-Type": "application/json"}, json.dumps(value).encode()


def ndjson_reply(events: Any, status: int = 200) -> tuple:
    """An NDJSON answer sent event by event (chunked, each flushed): ``events`` may be a generator
    that waits between events, to check that a client handles each as it comes."""
    return status, {"Content-Type": "application/x-ndjson"}, (json.dumps(e).encode() + b"\n" for e in events)


def error_reply(status: int, code: str, message: str = "boom", details: Any = None) -> tuple:
    e: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        e["details"] = details
    return json_reply(status, {"error": e})


class FakeServer:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[Request] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _read_body(self) -> tuple[bytes, bool, list[int]]:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts, sizes = [], []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts), True, sizes
                        parts.append(self.rfile.read(size))
                        sizes.append(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n), False, []

            def _handle(self) -> None:
                u = urllib.parse.urlsplit(self.path)
                body, chunked, sizes = self._read_body()
                req = Request(self.command, u.path, urllib.parse.parse_qs(u.query, keep_blank_values=True), self.headers, body, chunked, sizes)
                fake.requests.append(req)
                route = fake.routes.get((self.command, u.path))
                if route is None:
                    status, headers, payload = error_reply(404, "route_not_found", f"no route {self.command} {u.path}")
                else:
                    status, headers, payload = route(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if isinstance(payload, (bytes, bytearray)):
                    if "Content-Length" in headers:
                        # a route that announces a length of its own (maybe more than it sends):
                        # the connection closes after the body, as a proxy cut short would
                        self.close_connection = True
                    else:
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for chunk in payload:
                    if chunk:
                        self.wfile.write(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that go away early (timeouts, aborted uploads) are part of the tests

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
