"""Cutting a list of ids into chunks: the one helper every app uses for it.

Two reasons to chunk, one helper: a ``pk IN (...)`` list must stay below the
database's parameter limit (SQLite builds before 3.32 allow 999 variables,
PostgreSQL 65535), and queued work is cut into tasks of a bounded size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

# Values per `IN (...)` query: well below every supported database's parameter limit.
IN_QUERY_MAX_IDS = 500


def id_chunks(ids: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items of ``ids``, in order; only the last may be shorter.

    ``ids`` may be any iterable, also a lazy one (a queryset's ``iterator()``):
    only one chunk is held at a time.
    """
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, not {size}")
    iterator = iter(ids)
    while chunk := list(islice(iterator, size)):
        yield chunk
