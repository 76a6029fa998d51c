"""Internal helpers shared by the SDK's classes (not part of the public API)."""

from __future__ import annotations

import functools
import types
import urllib.parse
from typing import Any, Callable, Optional

from .connection import ApiClient, ConnectionConfig


class dualmethod:
    """A method that works on the class (``Sandbox.kill(sandbox_id)``) and on an instance
    (``sandbox.kill()``), with a separate function for each."""

    def __init__(self, class_func: Callable[..., Any]) -> None:
        self._class_func = class_func
        self._instance_func: Optional[Callable[..., Any]] = None
        functools.update_wrapper(self, class_func)  # type: ignore[arg-type]

    def instance(self, func: Callable[..., Any]) -> "dualmethod":
        """Sets the function used when the method is called on an instance."""
        self._instance_func = func
        return self

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Callable[..., Any]:
        if obj is None:
            return types.MethodType(self._class_func, objtype)
        assert self._instance_func is not None
        return types.MethodType(self._instance_func, obj)


def quote(segment: str) -> str:
    """An id as one URL path segment."""
    return urllib.parse.quote(segment, safe="")


def client(api_key: Optional[str], api_url: Optional[str], request_timeout: Optional[float]) -> ApiClient:
    """An API client from the ``api_key`` / ``api_url`` / ``request_timeout`` arguments."""
    return ApiClient(ConnectionConfig(api_url=api_url, api_key=api_key, request_timeout=request_timeout))
