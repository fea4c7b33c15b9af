"""More like this: the images most like a given one, by the cosine similarity of their embeddings.

The embeddings are the active version's (ml.features: the model's penultimate
features, stored with each prediction). The image page and the review screen show
the ``SIMILAR_SHOWN`` most similar images; "label similar" takes the unreviewed
ones above a similarity the user sets (predictions.admin.similar_views).

How it stays fast (``python -m bench.similar`` measures it)
----------------------------------------------------------
Each web process keeps the version's vectors in memory, normalised once and
stored as int8 with one scale per row (100k x 512 = 51 MB, half of float16's
100 MB; cosines within about 0.003 of float32's, and the top 12 the same in our
checks). A query is one matrix-vector product, 512 rows at a time through BLAS in
float32 (numpy has no BLAS for float16: a float16 product took 1.2 s at 100k,
converting to float32 first 150 ms), then ``argpartition``. The rows are split
between up to ``_PRODUCT_THREADS`` threads (numpy lets go of the GIL in both the
conversion and the product): at 100k on 2 cores, 9.2 ms on one, 5.4-5.8 on two.
Blocks stay at 512 rows because OpenBLAS runs a larger product on all its own
threads, which took 20 ms. The same numpy path on SQLite and PostgreSQL.

The cached matrix is checked against a marker: the count and newest id of the
version's predictions, and the progress of its embeddings jobs. New predictions
(an upload being predicted) are appended; anything else (deleted images, filled
embeddings) loads the matrix again. The marker's count reads an index of the
whole version (20 ms at 100k on SQLite, more than the product itself), so it is
read at most every ``RECHECK_SECONDS``: a new prediction shows up that much later
at worst, and a deleted image is never shown (the rows shown are read afresh).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from django.db.models import Count, Max, Q, Sum

from images.models import Image
from ml.cores import usable_cores
from ml.features import embedding_from_bytes, embedding_matrix
from predictions.models import ModelVersion, Prediction, PredictionJob
from predictions.selectors.quality import PENDING_SOURCES
from predictions.selectors.versions import model_version_active
from predictions.services.chunk_record import EMBEDDINGS_REASON
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

SIMILAR_SHOWN = 12
LABEL_SIMILAR_MAX = 500  # images one "label similar" may change (the preview shows them all)
RECHECK_SECONDS = 5.0
_PRODUCT_ROWS = 512  # rows per float32 block: stays in cache, and BLAS stays on one thread
_PRODUCT_THREADS = 4
_PRODUCT_SPLIT_ROWS = 8 * _PRODUCT_ROWS  # below this, one thread: handing over costs more than it saves
_LOAD_ROWS = 2000


@dataclass(frozen=True)
class SimilarImage:
    image_id: int
    similarity: float  # cosine, -1..1
    name: str
    thumbnail: str  # storage name, "" when not made yet
    label: str  # the current label, else the version's prediction; "" when neither
    reviewed: bool


@dataclass(frozen=True)
class _Vectors:
    version_id: int
    marker: tuple
    last_pk: int
    count: int
    image_ids: np.ndarray  # (capacity,) int64; rows [:size] are used
    codes: np.ndarray  # (capacity, dim) int8: each normalised row / its scale
    scales: np.ndarray  # (capacity,) float32
    size: int
    checked_at: float = 0.0  # time.monotonic() of the last marker check

    @property
    def nbytes(self) -> int:
        return self.codes[: self.size].nbytes + self.scales[: self.size].nbytes + self.image_ids[: self.size].nbytes


_lock = threading.Lock()
_cached: dict[int, _Vectors] = {}  # one entry: the version last asked for
# Shared by the process's requests; its threads start with the first large query.
_product_pool = ThreadPoolExecutor(_PRODUCT_THREADS, thread_name_prefix="similar-product")


def similar_images(
    *, image_id: int, limit: int = SIMILAR_SHOWN, model_version: ModelVersion | None = None
) -> list[SimilarImage]:
    """The ``limit`` images most similar to ``image_id`` (not itself), most similar first; [] without an embedding."""
    ranked = _ranked(image_id=image_id, model_version=model_version, limit=limit)
    if ranked is None:
        return []
    version, ids, similarities = ranked
    return _described(version=version, ids=ids, similarities=similarities)


def similar_unreviewed_images(
    *,
    image_id: int,
    threshold: float,
    limit: int = LABEL_SIMILAR_MAX,
    model_version: ModelVersion | None = None,
    gold_hidden: bool = False,
) -> list[SimilarImage]:
    """The images at least ``threshold`` similar to ``image_id`` that label similar may change, most similar first:
    unreviewed, not gold, none with independent reviews to settle (predictions.services.operations).

    With ``gold_hidden`` (predictions.selectors.quality.gold_hidden_from), the images that look
    unreviewed to such a user: gold ones and ones with independent reviews pending too, as "more
    like this" shows them (leaving them out would tell which they are); the change then skips
    them as reserved for the review screen.
    """
    ranked = _ranked(image_id=image_id, model_version=model_version, limit=None, threshold=threshold)
    if ranked is None:
        return []
    version, ids, similarities = ranked
    if gold_hidden:
        looks_open = Q(final_label__isnull=True) | Q(is_gold=True)
    else:
        looks_open = Q(final_label__isnull=True, is_gold=False) & ~Q(label_source__in=PENDING_SOURCES)
    chosen: list[tuple[int, float]] = []
    for start in range(0, len(ids), IN_QUERY_MAX_IDS):
        chunk = ids[start : start + IN_QUERY_MAX_IDS]
        open_ids = set(Image.objects.filter(looks_open, pk__in=chunk).values_list("pk", flat=True))
        chosen += [(pk, similarity) for pk, similarity in zip(chunk, similarities[start:]) if pk in open_ids]
        if len(chosen) >= limit:
            break
    chosen = chosen[:limit]
    return _described(version=version, ids=[pk for pk, _ in chosen], similarities=[s for _, s in chosen])


def similar_vectors_nbytes(*, model_version: ModelVersion | None = None) -> int:
    """Memory the cached vectors of the version take in this process (loading them if needed)."""
    version = model_version or model_version_active()
    return 0 if version is None else _vectors(version).nbytes


def clear_cache() -> None:
    with _lock:
        _cached.clear()


# --- ranking ---------------------------------------------------------------------------------


def _ranked(*, image_id: int, model_version: ModelVersion | None, limit: int | None, threshold: float | None = None):
    version = model_version or model_version_active()
    if version is None:
        return None
    blob = (
        Prediction.objects.filter(model_version=version, image_id=image_id, embedding__isnull=False)
        .values_list("embedding", flat=True)
        .first()
    )
    if blob is None:
        return None
    query = _normalised(embedding_from_bytes(bytes(blob)).astype(np.float32)[None, :])[0]
    vectors = _vectors(version)
    if vectors.size == 0 or vectors.codes.shape[1] != len(query):
        return None
    similarities = _similarities(vectors, query)
    similarities[vectors.image_ids[: vectors.size] == image_id] = -np.inf
    if threshold is not None:
        candidates = np.flatnonzero(similarities >= threshold)
    else:
        count = min(limit, vectors.size)
        candidates = np.argpartition(-similarities, count - 1)[:count] if count else np.empty(0, dtype=np.int64)
    candidates = candidates[np.isfinite(similarities[candidates])]
    order = candidates[np.lexsort((vectors.image_ids[candidates], -similarities[candidates]))]
    return version, vectors.image_ids[order].tolist(), similarities[order].tolist()


def _similarities(vectors: _Vectors, query: np.ndarray) -> np.ndarray:
    out = np.empty(vectors.size, dtype=np.float32)
    threads = min(_PRODUCT_THREADS, usable_cores(), max(1, vectors.size // _PRODUCT_SPLIT_ROWS))
    if threads == 1:
        _products_into(out, vectors.codes, query, 0, vectors.size)
    else:
        step = -(-vectors.size // threads)
        parts = [(start, min(start + step, vectors.size)) for start in range(0, vectors.size, step)]
        list(_product_pool.map(lambda part: _products_into(out, vectors.codes, query, *part), parts))
    out *= vectors.scales[: vectors.size]
    return np.clip(out, -1.0, 1.0, out=out)


def _products_into(out: np.ndarray, codes: np.ndarray, query: np.ndarray, start: int, stop: int) -> None:
    """out[start:stop] = codes[start:stop] @ query, a float32 block of rows at a time."""
    block = np.empty((_PRODUCT_ROWS, codes.shape[1]), dtype=np.float32)
    for first in range(start, stop, _PRODUCT_ROWS):
        last = min(first + _PRODUCT_ROWS, stop)
        rows = block[: last - first]
        np.copyto(rows, codes[first:last], casting="unsafe")
        np.dot(rows, query, out=out[first:last])


def _normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


# --- the cached matrix -------------------------------------------------------------------------


def _vectors(version: ModelVersion) -> _Vectors:
    cached = _cached.get(version.pk)
    if cached is not None and time.monotonic() - cached.checked_at < RECHECK_SECONDS:
        return cached
    marker = _marker(version.pk)
    with _lock:
        cached = _cached.get(version.pk)
        if cached is not None and cached.marker == marker:
            vectors = cached
        else:
            vectors = _appended(cached, marker) if cached is not None else None
            if vectors is None:
                vectors = _loaded(version.pk, marker, after=None)
        vectors = replace(vectors, checked_at=time.monotonic())
        _cached.clear()
        _cached[version.pk] = vectors
        return vectors


def _marker(version_id: int) -> tuple:
    rows = Prediction.objects.filter(model_version_id=version_id).aggregate(count=Count("pk"), last=Max("pk"))
    fills = PredictionJob.objects.filter(model_version_id=version_id, reason=EMBEDDINGS_REASON).aggregate(
        jobs=Count("pk"), done=Sum("done")
    )
    return rows["count"], rows["last"] or 0, fills["jobs"], fills["done"] or 0


def _appended(cached: _Vectors, marker: tuple) -> _Vectors | None:
    """``cached`` with the predictions made since, when only new ones came; None when anything else changed."""
    count, last, *fills = marker
    if fills != list(cached.marker[2:]) or last < cached.last_pk:
        return None
    new = Prediction.objects.filter(model_version_id=cached.version_id, pk__gt=cached.last_pk).count()
    if count - cached.count != new:
        return None  # deleted predictions (or ones committed out of id order): load again
    return _loaded(cached.version_id, marker, after=cached)


def _loaded(version_id: int, marker: tuple, *, after: _Vectors | None) -> _Vectors:
    """The version's vectors: all of them, or ``after``'s plus the predictions newer than its last."""
    count, last = marker[0], marker[1]
    rows = Prediction.objects.filter(model_version_id=version_id, embedding__isnull=False, pk__lte=last)
    if after is not None:
        rows = rows.filter(pk__gt=after.last_pk)
        image_ids, codes, scales, size = after.image_ids, after.codes, after.scales, after.size
    else:
        image_ids, codes, scales, size = np.empty(0, np.int64), np.empty((0, 0), np.int8), np.empty(0, np.float32), 0
    batch: list = []
    for row in rows.order_by("pk").values_list("image_id", "embedding").iterator(chunk_size=_LOAD_ROWS):
        batch.append(row)
        if len(batch) == _LOAD_ROWS:
            image_ids, codes, scales, size = _append(image_ids, codes, scales, size, batch)
            batch = []
    if batch:
        image_ids, codes, scales, size = _append(image_ids, codes, scales, size, batch)
    return _Vectors(version_id=version_id, marker=marker, last_pk=last, count=count, image_ids=image_ids,
                    codes=codes, scales=scales, size=size)  # fmt: skip


def _append(image_ids, codes, scales, size: int, rows: list) -> tuple:
    """Quantise ``rows`` (image id, embedding bytes) into the arrays, growing them (doubling) when full."""
    matrix = _normalised(embedding_matrix([bytes(blob) for _, blob in rows]).astype(np.float32))
    if size and matrix.shape[1] != codes.shape[1]:
        raise ValueError(f"embeddings of {matrix.shape[1]} values among ones of {codes.shape[1]}: mixed models?")
    needed = size + len(rows)
    if needed > len(image_ids):
        capacity = max(needed, 2 * len(image_ids), _LOAD_ROWS)
        image_ids = np.resize(image_ids, capacity)
        grown = np.zeros((capacity, matrix.shape[1]), dtype=np.int8)
        if size:
            grown[:size] = codes[:size]
        codes = grown
        scales = np.resize(scales, capacity)
    row_max = np.abs(matrix).max(axis=1)
    row_scale = np.where(row_max > 0, row_max / 127, 1.0).astype(np.float32)
    codes[size:needed] = np.rint(matrix / row_scale[:, None]).astype(np.int8)
    scales[size:needed] = row_scale
    image_ids[size:needed] = [image_id for image_id, _ in rows]
    return image_ids, codes, scales, needed


# --- what is shown -------------------------------------------------------------------------------


def _described(*, version: ModelVersion, ids: list[int], similarities: list[float]) -> list[SimilarImage]:
    images: dict[int, dict] = {}
    predicted: dict[int, str] = {}
    for chunk in id_chunks(ids, IN_QUERY_MAX_IDS):
        for row in Image.objects.filter(pk__in=chunk).values(
            "pk", "original_name", "thumbnail", "final_label__name", "is_gold"
        ):
            images[row["pk"]] = row
        predicted.update(
            Prediction.objects.filter(model_version=version, image_id__in=chunk).values_list("image_id", "label__name")
        )
    shown = []
    for pk, similarity in zip(ids, similarities):
        image = images.get(pk)
        if image is None:  # deleted since the vectors were loaded
            continue
        # A gold image's label is the reference reviewers are measured against: never shown here.
        reviewed = image["final_label__name"] is not None and not image["is_gold"]
        shown.append(
            SimilarImage(
                image_id=pk,
                similarity=round(float(similarity), 4),
                name=image["original_name"],
                thumbnail=image["thumbnail"] or "",
                label=image["final_label__name"] if reviewed else predicted.get(pk, ""),
                reviewed=reviewed,
            )
        )
    return shown
