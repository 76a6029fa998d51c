"""Shared volumes: the :class:`Volume` class."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Optional

from ._util import client as _client
from ._util import quote as _quote
from .errors import SandboxError
from .models import parse_datetime

__all__ = ["Volume"]


@dataclass(frozen=True)
class Volume:
    """A shared volume: durable storage outside any sandbox, mounted read-write into sandboxes at
    the paths they choose::

        from nullspace import Sandbox, Volume

        Volume.create("datasets")
        sandbox = Sandbox.create(template="base", volumes={"/mnt/data": "datasets"})

    Several sandboxes may mount one volume at once and see each other's writes. Snapshots, forks
    and hibernation never copy a volume: a restored sandbox sees its current content. Every class
    method takes ``api_key``, ``api_url`` and ``request_timeout`` like :class:`~nullspace.Sandbox`.

    Attributes:
        name: 1-63 characters of ``a-z 0-9 _ -``, starting with a letter or digit.
        id: The server's id of the volume.
        created_at: When it was created (UTC).
        size_bytes: Bytes its files use.
        mounted_by: Sandboxes (running or paused) that mount it.
    """

    name: str
    id: str
    created_at: datetime
    size_bytes: int
    mounted_by: list[str]

    @classmethod
    def from_json(cls, r: Mapping[str, Any]) -> "Volume":
        """From the API's ``Volume`` object."""
        return cls(
            name=r["name"],
            id=r["volumeId"],
            created_at=parse_datetime(r["createdAt"]),  # type: ignore[arg-type]
            size_bytes=int(r.get("sizeBytes", 0)),
            mounted_by=list(r.get("mountedBy") or []),
        )

    @classmethod
    def create(cls, name: str, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> "Volume":
        """Creates a volume.

        Raises:
            InvalidArgumentError: the name is not valid (code ``invalid_volume_name``).
            ConflictError: a volume of that name exists (code ``already_exists``).
        """
        api = _client(api_key, api_url, request_timeout)
        return cls.from_json(api.json("POST", "/v1/volumes", json={"name": name}))

    @classmethod
    def get(cls, name: str, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> "Volume":
        """A volume by name.

        Raises:
            VolumeNotFoundError: no such volume.
        """
        api = _client(api_key, api_url, request_timeout)
        return cls.from_json(api.json("GET", f"/v1/volumes/{_quote(name)}"))

    @classmethod
    def list(cls, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> "list[Volume]":
        """Every volume."""
        api = _client(api_key, api_url, request_timeout)
        return [cls.from_json(v) for v in api.json("GET", "/v1/volumes")["volumes"]]

    @classmethod
    def delete(cls, name: str, *, api_key: Optional[str] = None, api_url: Optional[str] = None, request_timeout: Optional[float] = None) -> bool:
        """Deletes a volume and its data. Returns ``False`` when there is no such volume.

        Raises:
            ConflictError: code ``volume_in_use`` while a sandbox (running or paused) mounts it.
        """
        api = _client(api_key, api_url, request_timeout)
        try:
            api.json("DELETE", f"/v1/volumes/{_quote(name)}")
            return True
        except SandboxError as err:
            if err.code == "volume_not_found":
                return False
            raise
