"""Near-duplicate images: which stored images look alike, by their perceptual hashes (ml.hashing).

What counts as a duplicate
--------------------------
- The same file (same bytes, same sha256) is never stored twice: an upload
  reports it as a duplicate and keeps the image already there (images.services).
- An ``exact`` pair: two stored images whose perceptual hashes are equal
  (distance 0): the same picture in another file (re-encoded, metadata changed).
- A ``near`` pair: hashes that differ in 1 to ``NEAR_DUPLICATE_DISTANCE`` bits
  (resized, re-compressed, slightly cropped or brightened copies; the threshold's
  measurements are in ml.hashing).
Images without a hash (stored before hashes were, until ``find_duplicates
--backfill``) are in no pair.

Pairs and groups
----------------
A group is a connected set of pairs (union-find, done by scipy's
connected_components). Pairs are listed so that every group is connected by
them, without the quadratic blow-up of a large group of equal hashes: each image
whose hash another image has already is paired with the first (lowest id) image
of that hash (``exact``); two different hashes within the threshold give one
``near`` pair, between the first images of each. ``image_id`` is always the
later image of a pair, ``duplicate_of`` the earlier.

How it stays fast at 100k images
--------------------------------
- An upload compares each new image with every stored hash (:class:`HashIndex`):
  the hashes are loaded once per upload batch (one query, 8 bytes an image: under
  1 MB at 100k), then each new image costs one XOR and popcount over the array
  (``numpy.bitwise_count``), about half a millisecond at 100k. Two uploads running
  at the same time do not see each other's images; the pairs below do.
- All pairs (the groups page, the changelist filter, ``find_duplicates``) are
  found exactly by multi-index hashing (Norouzi, Punjani and Fleet, 2012): the
  64 bits are cut into four 16-bit blocks; two hashes within distance 10 have
  one of the first three blocks within distance 2, or the fourth within 1
  (pigeonhole), so each hash looks up 3 x 137 + 17 neighbouring block keys
  instead of being compared with every other hash. On 100k random hashes, on
  a busy 2-core machine: 2 s, where comparing every pair took 70 s. The result
  is kept per process until the hashes change (their count or the newest image).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from django.db import connection
from django.db.models import BooleanField, Count, Max, QuerySet
from django.db.models.expressions import RawSQL

from ml.hashing import NEAR_DUPLICATE_DISTANCE

from .models import Image

EXACT = "exact"
NEAR = "near"

_BLOCKS = 4
_BLOCK_BITS = 16
_BLOCK_MASK = np.uint64((1 << _BLOCK_BITS) - 1)


@dataclass(frozen=True)
class DuplicatePair:
    image_id: int  # the later image
    duplicate_of: int  # the earlier image it looks like
    distance: int  # bits in which their hashes differ

    @property
    def kind(self) -> str:
        return EXACT if self.distance == 0 else NEAR

    def as_dict(self) -> dict:
        return {"image_id": self.image_id, "duplicate_of": self.duplicate_of, "distance": self.distance,
                "kind": self.kind}  # fmt: skip


@dataclass(frozen=True)
class DuplicateGroup:
    image_ids: tuple[int, ...]  # ascending
    pairs: tuple[DuplicatePair, ...]  # connecting them (see the module docstring)


@dataclass(frozen=True)
class Duplicates:
    pairs: tuple[DuplicatePair, ...]  # by image_id, then duplicate_of
    groups: tuple[DuplicateGroup, ...]  # largest first, then by first image

    @property
    def image_ids(self) -> frozenset[int]:
        return frozenset(pk for group in self.groups for pk in group.image_ids)


# --- one upload batch ------------------------------------------------------------------


class HashIndex:
    """The stored hashes, compared with each new image of one upload batch.

    Loaded once (:meth:`load`); images stored during the batch are added with
    :meth:`add`, so a file that looks like an earlier file of the same upload is
    found too. A linear scan: see the module docstring for why that is enough.
    """

    def __init__(self, ids: np.ndarray, hashes: np.ndarray) -> None:
        self._ids = ids.astype(np.int64)  # ascending
        self._hashes = hashes.astype(np.int64).view(np.uint64)
        self._added_ids: list[int] = []
        self._added_hashes: list[int] = []

    @classmethod
    def load(cls) -> HashIndex:
        ids, hashes = _stored_hashes()
        return cls(ids, hashes)

    def __len__(self) -> int:
        return len(self._ids) + len(self._added_ids)

    def nearest(
        self, phash: int, *, exclude: int | None = None, max_distance: int = NEAR_DUPLICATE_DISTANCE
    ) -> tuple[int, int] | None:
        """(image id, distance) of the closest hash within ``max_distance``; the lowest id among equals."""
        added_ids = np.array(self._added_ids, dtype=np.int64)
        added_hashes = np.array(self._added_hashes, dtype=np.int64).view(np.uint64)
        # The loaded and the added hashes apart: joining them would copy the whole index for each image.
        found = [
            match
            for ids, hashes in ((self._ids, self._hashes), (added_ids, added_hashes))
            if (match := _closest(ids, hashes, phash, exclude=exclude, max_distance=max_distance)) is not None
        ]
        return min(found, key=lambda match: (match[1], match[0]), default=None)

    def add(self, image_id: int, phash: int) -> None:
        position = np.searchsorted(self._ids, image_id)
        if position < len(self._ids) and self._ids[position] == image_id:
            return  # loaded already
        self._added_ids.append(image_id)
        self._added_hashes.append(phash)


def _closest(
    ids: np.ndarray, hashes: np.ndarray, phash: int, *, exclude: int | None, max_distance: int
) -> tuple[int, int] | None:
    if not len(ids):
        return None
    distances = np.bitwise_count(hashes ^ np.int64(phash).view(np.uint64)).astype(np.int16)
    if exclude is not None:
        distances[ids == exclude] = 64 + 1
    close = np.flatnonzero(distances <= max_distance)
    if not len(close):
        return None
    best = close[np.lexsort((ids[close], distances[close]))[0]]
    return int(ids[best]), int(distances[best])


# --- every stored image ------------------------------------------------------------------

_lock = threading.Lock()
_cached: dict[tuple, Duplicates] = {}  # one entry: (marker, distance) -> result


def duplicates_find(*, max_distance: int = NEAR_DUPLICATE_DISTANCE) -> Duplicates:
    """Every pair and group of near-duplicates among the stored images (kept per process until hashes change)."""
    marker = (_hashes_marker(), max_distance)
    with _lock:
        found = _cached.get(marker)
        if found is None:
            ids, hashes = _stored_hashes()
            found = duplicates_compute(ids=ids, hashes=hashes, max_distance=max_distance)
            _cached.clear()
            _cached[marker] = found
        return found


def duplicates_compute(
    *, ids: np.ndarray, hashes: np.ndarray, max_distance: int = NEAR_DUPLICATE_DISTANCE
) -> Duplicates:
    """The pairs and groups of ``ids`` by ``hashes`` (signed 64-bit), without a database."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return Duplicates(pairs=(), groups=())
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    unique, first, inverse = np.unique(
        np.asarray(hashes, dtype=np.int64)[order].view(np.uint64), return_index=True, return_inverse=True
    )
    inverse = inverse.reshape(-1)
    first_id = ids[first]  # ids ascend, so np.unique's first occurrence is the lowest id of each hash
    pairs: list[DuplicatePair] = [
        DuplicatePair(image_id=int(pk), duplicate_of=int(first_id[value]), distance=0)
        for pk, value in zip(ids.tolist(), inverse.tolist())
        if pk != first_id[value]
    ]
    left, right = _close_hash_pairs(unique, max_distance)
    distances = np.bitwise_count(unique[left] ^ unique[right])
    for a, b, distance in zip(first_id[left].tolist(), first_id[right].tolist(), distances.tolist()):
        pairs.append(DuplicatePair(image_id=max(a, b), duplicate_of=min(a, b), distance=int(distance)))
    pairs.sort(key=lambda pair: (pair.image_id, pair.duplicate_of))
    return Duplicates(pairs=tuple(pairs), groups=_groups(ids, inverse, len(unique), left, right, pairs))


def images_near_duplicate_filter(queryset: QuerySet[Image], *, flagged: bool) -> QuerySet[Image]:
    """Images in a near-duplicate group (``flagged``), or in none."""
    ids = sorted(duplicates_find().image_ids)
    if not ids:
        return queryset if not flagged else queryset.none()
    # Integers computed here, written into the SQL: a list of 100k ids stays one
    # statement, under every database's limit on parameters.
    quote = connection.ops.quote_name
    column = f"{quote(Image._meta.db_table)}.{quote(Image._meta.pk.column)}"
    condition = f"{column} {'IN' if flagged else 'NOT IN'} ({','.join(str(int(pk)) for pk in ids)})"
    return queryset.filter(RawSQL(condition, (), output_field=BooleanField()))


def clear_cache() -> None:
    with _lock:
        _cached.clear()


def _hashes_marker() -> tuple:
    # Hashes never change once set (they are of the file's content): a new or a
    # deleted image, or a backfilled hash, changes the count or the newest id.
    marker = Image.objects.filter(phash__isnull=False).aggregate(count=Count("pk"), last=Max("pk"))
    return marker["count"], marker["last"]


def _stored_hashes() -> tuple[np.ndarray, np.ndarray]:
    rows = Image.objects.filter(phash__isnull=False).order_by("pk").values_list("pk", "phash")
    table = np.array(list(rows), dtype=np.int64).reshape(-1, 2)
    return table[:, 0], table[:, 1]


def _groups(ids, inverse, value_count, left, right, pairs: Iterable[DuplicatePair]) -> tuple[DuplicateGroup, ...]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(value_count, value_count))
    _, component_of_value = connected_components(graph, directed=False)
    component = component_of_value[inverse]
    sizes = np.bincount(component)
    members: dict[int, list[int]] = {}
    for pk, group in zip(ids.tolist(), component.tolist()):
        if sizes[group] > 1:
            members.setdefault(group, []).append(pk)
    group_of = {pk: group for group, pks in members.items() for pk in pks}
    pairs_of: dict[int, list[DuplicatePair]] = {}
    for pair in pairs:
        pairs_of.setdefault(group_of[pair.image_id], []).append(pair)
    groups = [DuplicateGroup(image_ids=tuple(pks), pairs=tuple(pairs_of[group])) for group, pks in members.items()]
    groups.sort(key=lambda group: (-len(group.image_ids), group.image_ids[0]))
    return tuple(groups)


def _close_hash_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of the distinct uint64 ``hashes`` within ``max_distance`` bits: multi-index hashing."""
    n = len(hashes)
    found_left, found_right = [np.empty(0, dtype=np.int64)], [np.empty(0, dtype=np.int64)]
    if n < 2:
        return found_left[0], found_right[0]
    positions = np.arange(n, dtype=np.int64)
    # Some block is within floor(d / blocks) bits; sharper: with d = blocks * r + a, one of the
    # first a + 1 blocks is within r, or one of the others within r - 1 (Norouzi et al.).
    radius, spare = divmod(max_distance, _BLOCKS)
    for block in range(_BLOCKS):
        block_radius = radius if block <= spare else radius - 1
        if block_radius < 0:
            continue
        keys = ((hashes >> np.uint64(_BLOCK_BITS * block)) & _BLOCK_MASK).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << _BLOCK_BITS)
        starts = np.cumsum(counts) - counts
        for flip in _flips(block_radius):
            probe = keys ^ flip
            matches = counts[probe]
            ends = np.cumsum(matches)
            total = int(ends[-1])
            if not total:
                continue
            left = np.repeat(positions, matches)
            right = order[np.repeat(starts[probe] - (ends - matches), matches) + np.arange(total)]
            keep = left < right
            left, right = left[keep], right[keep]
            close = np.bitwise_count(hashes[left] ^ hashes[right]) <= max_distance
            found_left.append(left[close])
            found_right.append(right[close])
    # A pair close in several blocks is found once for each.
    keys = np.unique(np.concatenate(found_left) * n + np.concatenate(found_right))
    return keys // n, keys % n


@lru_cache(maxsize=8)
def _flips(radius: int) -> tuple[int, ...]:
    """Every 16-bit mask of at most ``radius`` bits set."""
    return tuple(
        sum(1 << bit for bit in bits)
        for count in range(radius + 1)
        for bits in itertools.combinations(range(_BLOCK_BITS), count)
    )
