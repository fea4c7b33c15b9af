"""The per-process predictor cache.

A worker (or the web process serving the JSON endpoint) loads the checkpoint of
a model version once and keeps the ``ml.predictor.Predictor`` for every later
call. ``ml`` is imported inside the functions: importing this module never
imports torch, so the admin and the qcluster parent can import it freely.
A checkpoint on the object store is read from this machine's copy
(predictions.checkpoint_cache), downloaded by the first process that needs it.
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from typing import TYPE_CHECKING

from django.conf import settings

from predictions.checkpoint_cache import checkpoint_local_path
from predictions.checkpoint_metadata import version_metadata

if TYPE_CHECKING:
    from ml.predictor import Predictor

    from predictions.models import ModelVersion

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# (model version id, checkpoint file name, STORE_EMBEDDINGS) -> Predictor. Holds one entry:
# loading a new version drops the old one, so a long-lived process does not
# keep every model it ever used.
_predictors: dict[tuple[int, str, bool], Predictor] = {}
_load_count = 0


def get_predictor(model_version: ModelVersion) -> Predictor:
    """The predictor for ``model_version``, loaded on first use in this process."""
    key = (model_version.pk, model_version.checkpoint.name, settings.STORE_EMBEDDINGS)
    predictor = _predictors.get(key)
    if predictor is not None:
        return predictor
    with _lock:
        # Another thread may have loaded it while this one waited for the lock.
        predictor = _predictors.get(key)
        if predictor is None:
            predictor = _load(model_version)
            _predictors.clear()
            _predictors[key] = predictor
        return predictor


def _load(model_version: ModelVersion) -> Predictor:
    global _load_count
    from ml.predictor import Predictor

    # On the object store, a copy on this machine's disk (downloaded once per machine).
    local = checkpoint_local_path(storage=model_version.checkpoint.storage, name=model_version.checkpoint.name)
    opened = nullcontext(local) if local is not None else model_version.checkpoint.open("rb")
    with opened as checkpoint:
        predictor = Predictor.from_checkpoint(
            checkpoint,
            overrides=version_metadata(model_version),
            device=settings.INFERENCE_DEVICE,
            precision=settings.INFERENCE_PRECISION,
            batch_size=settings.INFERENCE_BATCH_SIZE,
            # Process-wide in torch; 0 keeps torch's default.
            num_threads=settings.INFERENCE_THREADS or None,
            embeddings=settings.STORE_EMBEDDINGS,
        )
    _load_count += 1
    logger.info(
        "Loaded model version %s (%s) on %s, precision %s",
        model_version.pk,
        model_version.name,
        predictor.device,
        predictor.precision,
    )
    return predictor


def load_count() -> int:
    """How many checkpoints this process has loaded (tests and benchmarks check the cache with it)."""
    return _load_count


def clear_cache() -> None:
    """Forget the loaded predictors (tests; a replaced checkpoint file)."""
    with _lock:
        _predictors.clear()
