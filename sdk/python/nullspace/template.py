"""Templates as code: the :class:`Template` recipe builder, its ready checks, and builds.

A template starts from a nullspace template, a registry image, a local image archive or a
Dockerfile; its steps install packages, run commands, copy local files, set the environment,
workdir and user; its start command runs last and is running in every sandbox created from it::

    from nullspace import Template, wait_for_port

    template = (
        Template()
        .from_template("base")
        .apt_install(["nodejs"])
        .copy("./app", "/srv/app")
        .set_workdir("/srv/app")
        .set_start_cmd("node server.js", ready_cmd=wait_for_port(3000))
    )
    info = Template.build(template, name="my-node", on_log=print)

The local files of :meth:`Template.copy` (and a Dockerfile's context directory) are sent first as a
tar archive (``tarfile``), then the spec; the build's log is handed to ``on_log`` line by line.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Optional, Union

from ._util import client as _client
from ._util import quote as _quote
from .connection import iter_ndjson
from .errors import InvalidArgumentError, SandboxError, TemplateBuildError
from .models import parse_datetime

__all__ = ["Template", "TemplateInfo", "wait_for_port", "wait_for_command", "wait_for_file"]

ReadyCheck = dict
"""``{"port": N}``, ``{"cmd": "..."}`` or ``{"file": "/path"}``."""

LogCallback = Callable[[str], Any]

_RESERVED = ".nullspace"
"""Where :meth:`Template.copy` and :meth:`Template.from_archive` put local files in the context."""

_CHUNK = 256 * 1024


def wait_for_port(port: int) -> ReadyCheck:
    """Ready once a TCP port in the guest accepts connections."""
    return {"port": port}


def wait_for_command(cmd: str) -> ReadyCheck:
    """Ready once a command exits 0 (it is run again until it does)."""
    return {"cmd": cmd}


def wait_for_file(path: str) -> ReadyCheck:
    """Ready once a file exists (an absolute guest path)."""
    return {"file": path}


@dataclass(frozen=True)
class TemplateInfo:
    """A built template (one version of a name).

    Attributes:
        name, version: The template and its version (1, 2, ... per build of the name).
        ref: ``name:version``.
        cpu_count, memory_mib, disk_size_mib: The resources of its sandboxes.
        created_at: When it was built (UTC).
        from_: Where it started: ``"template base:1"``, ``"image registry/app:1"``, ...
        start_cmd: The process running in its snapshot, or ``None``.
        ready: Its ready check (``{"port": 3000}``...), or ``None``.
        envs: Its sandboxes' default environment.
        user: Default user of commands in its sandboxes (``None``: root).
        workdir: Default working directory of commands in its sandboxes (``None``: /workspace).
        exposed_ports: The ports its service listens on.
        build_ms: How long the build took, when known.
        steps: How many steps built it.
        compatible: Whether this host can start sandboxes from it.
        accel, cpu_model: The VM profile it was built for.
    """

    name: str
    version: int
    ref: str
    cpu_count: int
    memory_mib: int
    disk_size_mib: int
    created_at: Optional[datetime]
    from_: str
    start_cmd: Optional[str]
    ready: Optional[ReadyCheck]
    envs: dict[str, str]
    user: Optional[str]
    workdir: Optional[str]
    exposed_ports: list[int]
    build_ms: Optional[int]
    steps: int
    compatible: bool
    accel: str
    cpu_model: str

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "TemplateInfo":
        """From the API's template view."""
        return cls(
            name=r["name"],
            version=int(r.get("version") or 0),
            ref=r.get("ref") or r["name"],
            cpu_count=int(r.get("cpuCount") or 0),
            memory_mib=int(r.get("memoryMiB") or 0),
            disk_size_mib=int(r.get("diskSizeMiB") or 0),
            created_at=parse_datetime(r.get("createdAt")),
            from_=r.get("from") or "",
            start_cmd=r.get("startCmd"),
            ready=r.get("ready"),
            envs=dict(r.get("envs") or {}),
            user=r.get("user"),
            workdir=r.get("workdir"),
            exposed_ports=list(r.get("exposedPorts") or []),
            build_ms=r.get("buildMs"),
            steps=int(r.get("steps") or 0),
            compatible=bool(r.get("compatible", True)),
            accel=r.get("accel") or "",
            cpu_model=r.get("cpuModel") or "",
        )


class IgnoreRules:
    """``.dockerignore`` rules as Docker applies them: one pattern a line (``#`` comments and blank
    lines skipped), ``*`` and ``?`` within a path segment, ``**`` across segments, ``[...]``
    classes, ``!`` takes paths back; the last pattern that matches a path (or one of its parent
    directories) decides."""

    def __init__(self, text: str) -> None:
        self._rules: list[tuple[re.Pattern[str], bool]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclude = line.startswith("!")
            if exclude:
                line = line[1:].strip()
            line = posixpath.normpath(line).lstrip("/").rstrip("/")
            if not line or line == ".":
                continue
            self._rules.append((_pattern_regexp(line), exclude))

    def ignores(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, ``/``-separated) stays out of the context."""
        parents = [path[:i] for i, ch in enumerate(path) if ch == "/"]
        ignored = False
        for rx, exclude in self._rules:
            if rx.match(path) or any(rx.match(p) for p in parents):
                ignored = not exclude
        return ignored

    @property
    def has_exceptions(self) -> bool:
        """Whether an ignored directory may still hold a path taken back by a ``!`` rule."""
        return any(exclude for _, exclude in self._rules)


def _pattern_regexp(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                    out += "(?:.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out += "\\["
            else:
                body = pattern[i + 1 : end]
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + r"\Z")


def _bad(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message, code="bad_request")


def _looks_like_dockerfile(text: str) -> bool:
    return re.match(r"\s*(#|from\s|arg\s)", text, re.IGNORECASE) is not None


class Template:
    """A template recipe. Every method returns the builder, so that calls chain.

    Start with exactly one of :meth:`from_template`, :meth:`from_image`, :meth:`from_archive`,
    :meth:`from_dockerfile`; then the steps, in order; then :meth:`set_start_cmd`. Build it with
    :meth:`Template.build`.
    """

    def __init__(self) -> None:
        self._from: Optional[dict[str, Any]] = None
        self._dockerfile: Optional[str] = None
        self._dockerfile_dir: Optional[str] = None
        self._steps: list[dict[str, Any]] = []
        self._start: Optional[dict[str, Any]] = None
        # local files and directories put into the context under _RESERVED: (absolute path, context path)
        self._files: list[tuple[str, str]] = []

    def _no_start_yet(self) -> None:
        if self._from is not None or self._dockerfile is not None:
            raise _bad("the template already has a start: call one of from_template, from_image, from_archive, from_dockerfile once")

    def _set_from(self, value: dict[str, Any]) -> "Template":
        self._no_start_yet()
        self._from = value
        return self

    def _add_local(self, local_path: Union[str, "os.PathLike[str]"], kind: str) -> str:
        local = os.path.abspath(os.fspath(local_path))
        if not os.path.lexists(local):
            raise _bad(f"{kind}: {os.fspath(local_path)} does not exist")
        name = f"{_RESERVED}/{kind}/{len(self._files)}/{os.path.basename(local) or 'root'}"
        self._files.append((local, name))
        return name

    def from_template(self, name: str) -> "Template":
        """Starts from a nullspace template: ``"name"`` or ``"name:VERSION"``."""
        return self._set_from({"template": name})

    def from_image(self, ref: str, username: Optional[str] = None, password: Optional[str] = None) -> "Template":
        """Starts from an image of a registry (Docker Registry HTTP API v2), with credentials when
        it needs them."""
        if (username is None) != (password is None):
            raise _bad("from_image: give both username and password, or neither")
        value: dict[str, Any] = {"image": ref}
        if username is not None:
            value["auth"] = {"username": username, "password": password}
        return self._set_from(value)

    def from_archive(self, local_path: Union[str, "os.PathLike[str]"]) -> "Template":
        """Starts from a local image archive (``docker save`` or an OCI layout tar), sent with the
        context."""
        self._no_start_yet()
        return self._set_from({"archive": "ctx:" + self._add_local(local_path, "from")})

    def from_dockerfile(self, path_or_text: Union[str, "os.PathLike[str]"]) -> "Template":
        """Starts from a Dockerfile: a path to one (its directory is the build context unless
        ``context`` is given to :meth:`build`), a directory holding one, or its text."""
        self._no_start_yet()
        if self._steps:
            raise _bad("call from_dockerfile before adding steps (the Dockerfile's steps come first)")
        text = os.fspath(path_or_text)
        directory: Optional[str] = None
        if "\n" not in text:
            given = os.path.abspath(text)
            if os.path.exists(given):
                file = os.path.join(given, "Dockerfile") if os.path.isdir(given) else given
                try:
                    with open(file, "r", encoding="utf-8") as f:
                        text = f.read()
                except OSError as e:
                    raise _bad(f"from_dockerfile: cannot read {file}: {e.strerror or e}") from e
                directory = os.path.dirname(file)
            elif not _looks_like_dockerfile(text):
                raise _bad(f"from_dockerfile: {text} does not exist (and is not a Dockerfile's text)")
        self._dockerfile = text
        self._dockerfile_dir = directory
        return self

    def apt_install(self, packages: Union[str, Iterable[str]]) -> "Template":
        """Installs Debian packages (apt-get, as root)."""
        self._steps.append({"type": "apt", "packages": [packages] if isinstance(packages, str) else list(packages)})
        return self

    def run_cmd(self, cmd: Union[str, Iterable[str]]) -> "Template":
        """Runs a shell command (several: joined with ``&&``) as the current user, in the current workdir."""
        self._steps.append({"type": "run", "cmd": cmd if isinstance(cmd, str) else " && ".join(cmd)})
        return self

    def copy(
        self,
        local_path: Union[str, "os.PathLike[str]"],
        guest_path: str,
        chown: Optional[str] = None,
        mode: Union[int, str, None] = None,
    ) -> "Template":
        """Copies a local file or directory (its contents) to a guest path; a file goes into
        ``guest_path`` when it ends with ``/``. ``mode``: permission bits (``0o755`` or ``"0755"``);
        ``chown``: ``"user[:group]"``."""
        step: dict[str, Any] = {"type": "copy", "src": self._add_local(local_path, "copy"), "dest": guest_path}
        if chown is not None:
            step["chown"] = chown
        if mode is not None:
            step["mode"] = format(mode, "04o") if isinstance(mode, int) else mode
        self._steps.append(step)
        return self

    def set_envs(self, envs: Mapping[str, str]) -> "Template":
        """Sets environment variables for later steps and as the default environment of its sandboxes."""
        self._steps.append({"type": "env", "envs": dict(envs)})
        return self

    def set_workdir(self, path: str) -> "Template":
        """The working directory of later steps and of commands in its sandboxes."""
        self._steps.append({"type": "workdir", "path": path})
        return self

    def set_user(self, name: str) -> "Template":
        """The user of later steps and of commands in its sandboxes."""
        self._steps.append({"type": "user", "name": name})
        return self

    def expose(self, port: int) -> "Template":
        """Records a port the template's service listens on."""
        self._steps.append({"type": "expose", "port": port})
        return self

    def set_start_cmd(self, cmd: str, ready_cmd: Optional[ReadyCheck] = None, timeout_ms: Optional[int] = None) -> "Template":
        """The process running in the template's memory snapshot: started last; the snapshot is
        taken once ``ready_cmd`` passes (:func:`wait_for_port`, :func:`wait_for_command`,
        :func:`wait_for_file`; without one, right after the start), within ``timeout_ms``
        (default 60000)."""
        start: dict[str, Any] = {"cmd": cmd}
        if ready_cmd is not None:
            start["ready"] = dict(ready_cmd)
        if timeout_ms is not None:
            start["timeoutMs"] = timeout_ms
        self._start = start
        return self

    def to_spec(self) -> dict[str, Any]:
        """The build spec this recipe sends (its local files go in the context)."""
        spec: dict[str, Any] = {}
        if self._from is not None:
            spec["from"] = dict(self._from)
        if self._dockerfile is not None:
            spec["dockerfile"] = self._dockerfile
        spec["steps"] = [dict(s) for s in self._steps]
        if self._start is not None:
            spec["start"] = dict(self._start)
        return spec

    def _write_context(self, directory: Optional[str], out: IO[bytes]) -> None:
        """The context as a tar into ``out``: the context directory (its .dockerignore applied),
        then the recipe's local files."""
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            if directory is not None:
                rules = None
                ignore_file = os.path.join(directory, ".dockerignore")
                if os.path.isfile(ignore_file):
                    with open(ignore_file, "r", encoding="utf-8") as f:
                        rules = IgnoreRules(f.read())
                for child in sorted(os.listdir(directory)):
                    _add_tree(tar, os.path.join(directory, child), child, rules)
            now = int(time.time())
            dirs: set[str] = set()
            for local, name in self._files:
                parts = name.split("/")
                for i in range(1, len(parts)):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        info = tarfile.TarInfo(d)
                        info.type, info.mode, info.mtime, info.uname, info.gname = tarfile.DIRTYPE, 0o755, now, "root", "root"
                        tar.addfile(info)
                        dirs.add(d)
                _add_tree(tar, local, name, None)

    @classmethod
    def build(
        cls,
        template: "Template",
        *,
        name: str,
        cpu_count: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_size_mib: Optional[int] = None,
        on_log: Optional[LogCallback] = None,
        no_cache: bool = False,
        build_args: Optional[Mapping[str, str]] = None,
        context: Union[str, "os.PathLike[str]", None] = None,
        api_key: Optional[str] = None,
        api_url: Optional[str] = None,
        request_timeout: Optional[float] = None,
    ) -> TemplateInfo:
        """Builds ``template`` on the server as ``name`` (a new version when it exists): sends the
        context (when there are local files), then the spec, and follows the build's log to its
        end.

        Args:
            on_log: Called with each line of the log as it comes: ``"Step 3/7: RUN npm ci"``,
                output lines, ``"Step 3/7 done (1.2 s)"``.
            no_cache: Build every step again instead of reusing earlier results.
            build_args: Values of the Dockerfile's ARGs.
            context: The build context directory (what the Dockerfile's COPY reads); default: the
                directory of a Dockerfile given by path.

        Raises:
            TemplateBuildError: the build failed (``code``, ``step``, ``exit_code``, ``output``).
            InvalidArgumentError: the server refused the spec, Dockerfile or name before building
                (code ``invalid_build_spec``, ``invalid_dockerfile``, ...), or a local file is missing.
            ConflictError: the name is being built (``template_build_in_progress``).
        """
        api = _client(api_key, api_url, request_timeout)
        directory = os.path.abspath(os.fspath(context)) if context is not None else template._dockerfile_dir
        if directory is not None:
            if not os.path.isdir(directory):
                raise _bad(f"the build context {directory} is not a directory")
            if template._files and os.path.lexists(os.path.join(directory, _RESERVED)):
                raise _bad(
                    f"the build context {directory} has a {_RESERVED} entry, where the recipe's local files go: "
                    "rename it or leave it out of the context"
                )
        context_id: Optional[str] = None
        if directory is not None or template._files:
            with tempfile.TemporaryFile() as tmp:
                try:
                    template._write_context(directory, tmp)
                except OSError as e:
                    raise _bad(f"build context: cannot read {e.filename or ''}: {e.strerror or e}") from e
                tmp.seek(0)
                res = api.request("POST", "/v1/templates/contexts", body=_chunks(tmp), headers={"Content-Type": "application/x-tar"})
                context_id = res.json()["contextId"]
        body: dict[str, Any] = {"name": name, "spec": template.to_spec()}
        for key, value in (
            ("contextId", context_id),
            ("buildArgs", dict(build_args) if build_args is not None else None),
            ("cpuCount", cpu_count),
            ("memoryMiB", memory_mib),
            ("diskSizeMiB", disk_size_mib),
            ("noCache", True if no_cache else None),
        ):
            if value is not None:
                body[key] = value
        res = api.request("POST", "/v1/templates", json=body, timeout=None)
        return _follow_build(iter_ndjson(res.iter_bytes()), on_log)

    @classmethod
    def list(cls, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> "list[TemplateInfo]":
        """Every template of the server (``base`` included), each at its latest version."""
        api = _client(api_key, api_url, request_timeout)
        return [TemplateInfo.from_json(t) for t in api.json("GET", "/v1/templates")["templates"]]

    @classmethod
    def get(cls, name: str, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> TemplateInfo:
        """A template: ``"name"`` (its latest version) or ``"name:VERSION"``.

        Raises:
            TemplateNotFoundError: no such template.
        """
        api = _client(api_key, api_url, request_timeout)
        return TemplateInfo.from_json(api.json("GET", f"/v1/templates/{_quote(name)}"))

    @classmethod
    def delete(cls, name: str, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Deletes every version of a template (its sandboxes and snapshots keep working).
        Returns ``False`` when there is no such template."""
        api = _client(api_key, api_url, request_timeout)
        try:
            api.json("DELETE", f"/v1/templates/{_quote(name)}")
            return True
        except SandboxError as err:
            if err.code == "template_not_found":
                return False
            raise


def _add_tree(tar: tarfile.TarFile, local: str, name: str, rules: Optional[IgnoreRules]) -> None:
    """Adds ``local`` (a file, a symbolic link, not followed, or a directory and what is under it)
    as ``name``, owned by root, skipping what ``rules`` rule out and what is neither."""
    st = os.lstat(local)
    is_dir = stat.S_ISDIR(st.st_mode)
    ignored = rules is not None and rules.ignores(name)
    if ignored and not (is_dir and rules is not None and rules.has_exceptions):
        return
    if not ignored and (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        info = tar.gettarinfo(local, arcname=name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        if info.isreg():
            with open(local, "rb") as f:
                tar.addfile(info, f)
        else:
            tar.addfile(info)
    if is_dir:
        for child in sorted(os.listdir(local)):
            _add_tree(tar, os.path.join(local, child), f"{name}/{child}", rules)


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            return
        yield chunk


class _LogLines:
    """A build's output as lines: each stream decoded on its own (UTF-8 split across chunks), a
    line handed out when it ends."""

    def __init__(self, emit: LogCallback) -> None:
        self._emit = emit
        self._decoders: dict[str, Any] = {}
        self._pending: dict[str, str] = {}

    def add(self, stream: str, data_b64: str) -> None:
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise SandboxError("malformed base64 log chunk in a build stream", code="invalid_response") from e
        dec = self._decoders.setdefault(stream, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        lines = (self._pending.get(stream, "") + dec.decode(data)).split("\n")
        self._pending[stream] = lines.pop()
        for line in lines:
            self._emit(line.removesuffix("\r"))

    def flush(self) -> None:
        """Hands out what is left of each stream (a last line without a newline)."""
        for stream, dec in self._decoders.items():
            rest = self._pending.get(stream, "") + dec.decode(b"", True)
            if rest:
                self._emit(rest.removesuffix("\r"))
        self._decoders.clear()
        self._pending.clear()


def _follow_build(events: Iterable[Mapping[str, Any]], on_log: Optional[LogCallback]) -> TemplateInfo:
    emit: LogCallback = on_log if on_log is not None else (lambda line: None)
    log = _LogLines(emit)
    of = 0
    for ev in events:
        kind = ev.get("type")
        if kind == "step":
            log.flush()
            of = int(ev.get("of") or of)
            emit(f"Step {ev.get('step')}/{of}: {ev.get('instruction')}{' (cached)' if ev.get('cached') else ''}")
        elif kind == "log":
            log.add(str(ev.get("stream") or "stdout"), str(ev.get("data") or ""))
        elif kind == "info":
            log.flush()
            emit(str(ev.get("message")))
        elif kind == "stepDone":
            log.flush()
            emit(f"Step {ev.get('step')}/{of} done ({float(ev.get('ms') or 0) / 1000:.1f} s)")
        elif kind == "done":
            log.flush()
            return TemplateInfo.from_json(ev["template"])
        elif kind == "error":
            log.flush()
            step, exit_code, output = ev.get("step"), ev.get("exitCode"), ev.get("output")
            raise TemplateBuildError(
                str(ev.get("message") or "the build failed"),
                code=str(ev.get("code") or "template_build_failed"),
                step=step if isinstance(step, int) else None,
                exit_code=exit_code if isinstance(exit_code, int) else None,
                output=output if isinstance(output, str) else "",
            )
        # events of later servers are ignored
    log.flush()
    raise SandboxError("the build stream ended without a result (the server stopped?)", code="stream_ended")
