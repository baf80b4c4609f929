"""Cursor paging of the lists shown newest first (the cases dashboard, the inbox).

A list is a stream of items in descending id order (ids are ULIDs: creation order), read with
``stream(after)``: the items whose id is below ``after`` (from the newest when None), filters
already applied. A page is ``size`` items:

- ``?after=<id>``: the ``size`` items just below ``id`` (the "next" link carries the last id of
  the page shown);
- ``?before=<id>``: the ``size`` items just above ``id`` (the "previous" link carries the first
  id of the page shown), found by reading from the newest down to ``id``; when fewer than a
  page lie above it, the first page is shown instead, so "previous" from page 2 is page 1.

Items that arrive while a clerk walks the pages go on top and move no page boundary: walking
"next" from the first page shows every older item once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Generic, TypeVar

from mla_node.ids import is_ulid

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    newer: str | None  # the "previous" link's ``before`` cursor, None on the first page
    older: str | None  # the "next" link's ``after`` cursor, None on the last page


def cursor(value: str | None) -> str | None:
    """A cursor from the query string: a message id, or None (a bad one shows the first page)."""
    value = (value or "").strip().upper()
    return value if is_ulid(value) else None


async def page_of(
    stream: Callable[[str | None], AsyncGenerator[T, None]],
    key: Callable[[T], str],
    *,
    after: str | None,
    before: str | None,
    size: int,
) -> Page[T]:
    if before is not None and after is None:
        window: deque[T] = deque(maxlen=size)
        above = 0
        older = False
        async with aclosing(stream(None)) as items_above:
            async for item in items_above:
                if key(item) <= before:
                    older = True  # an item at or below the cursor: the next page is not empty
                    break
                window.append(item)
                above += 1
        if above > size:
            items = list(window)
            return Page(items, key(items[0]), key(items[-1]) if older else None)
        after = None  # fewer than a page above it: that is the first page
    items = []
    more = False
    async with aclosing(stream(after)) as rest:
        async for item in rest:
            if len(items) == size:
                more = True
                break
            items.append(item)
    newer = None if after is None else (key(items[0]) if items else after)
    return Page(items, newer, key(items[-1]) if more and items else None)
