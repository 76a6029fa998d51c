"""Lazy pagination of the API's list endpoints (``{items: [...], nextToken}``)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, Optional, TypeVar

__all__ = ["Paginator"]

T = TypeVar("T")

class Paginator(Generic[T]):
    """Pages of a list.

    Iterate it for every item (pages are fetched lazily, one after the other), or call
    :meth:`next_items` page by page while :attr:`has_next`. Nothing is fetched before that.

    Args:
        fetch: Fetches the page of a token (``None``: the first page) and returns its items and
            the next page's token (``None`` after the last page).
        next_token: Start from this page token.
    """

    def __init__(self, fetch: Callable[[Optional[str]], tuple[list[T], Optional[str]]], next_token: Optional[str] = None) -> None:
        self._fetch = fetch
        self._token = next_token
        self._started = False

    @property
    def has_next(self) -> bool:
        """Whether another page may be fetched (always ``True`` before the first page)."""
        return not self._started or self._token is not None

    @property
    def next_token(self) -> Optional[str]:
        """Token of the next page (``None`` before the first page, unless one was given, and
        after the last)."""
        return self._token

    def next_items(self) -> list[T]:
        """Fetches the next page; ``[]`` when there is none."""
        if not self.has_next:
            return []
        items, token = self._fetch(self._token)
        self._started = True
        self._token = token or None
        return items

    def __iter__(self) -> Iterator[T]:
        while self.has_next:
            yield from self.next_items()
