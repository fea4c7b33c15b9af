"""Checkpoints on the object store, copied once per machine and named by content hash.

A checkpoint in the file-system weights storage is read where it lies. One on
the object store (``MEDIA_STORAGE=s3``, reviewtool.object_storage) is copied
into ``CHECKPOINT_CACHE_DIR`` as ``<sha256>.pth`` the first time a process on
this machine needs it; every other worker, and every later cluster on the
machine, finds it there. The name comes from the SHA-256 the store keeps in the
object's metadata (one HEAD request), or from its ETag for an object written by
another tool, so a version registered again with the same weights reuses the
copy, and a replaced object is never answered with an old copy. The download
is checked against that hash, written under a temporary name and renamed, and
a lock file makes workers that start at once wait for the one download. The
cache keeps the CHECKPOINT_CACHE_KEEP copies used last.

No Django model and no torch here: the caller (predictions.inference) opens
the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_downloads = 0


class CheckpointCacheError(OSError):
    """The downloaded checkpoint is not the content the store described."""


def checkpoint_local_path(*, storage: Storage, name: str) -> Path | None:
    """A file on this machine with the checkpoint ``name`` of ``storage``, or None to read it through the storage.

    None for a remote storage that cannot say what an object holds before
    downloading it (a storage other than reviewtool.object_storage's).
    """
    try:
        return Path(storage.path(name))
    except NotImplementedError:
        pass
    fingerprint_of = getattr(storage, "object_fingerprint", None)
    if fingerprint_of is None:
        return None
    fingerprint = fingerprint_of(name)
    if _SHA256.match(fingerprint.sha256):
        key = fingerprint.sha256
    else:
        etag = re.sub(r"[^0-9A-Za-z-]", "", fingerprint.etag)[:100]
        if not etag:
            return None
        key = f"etag-{etag}"
    cache_dir = Path(settings.CHECKPOINT_CACHE_DIR)
    target = cache_dir / f"{key}.pth"
    if _touched(target):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f"{key}.lock"):
        # Another process may have finished the download while this one waited.
        if not _touched(target):
            _download(storage, name, target=target, etag=fingerprint.etag, sha256=fingerprint.sha256)
            _prune(cache_dir, keep=settings.CHECKPOINT_CACHE_KEEP)
    return target


def _touched(path: Path) -> bool:
    """Whether ``path`` is there; marked as just used if so (what the pruning keeps)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _prune(cache_dir: Path, *, keep: int) -> None:
    """Remove all but the ``keep`` checkpoints used last: each new version would otherwise stay on disk."""
    used: dict[Path, float] = {}
    for path in cache_dir.glob("*.pth"):
        try:
            used[path] = path.stat().st_mtime
        except FileNotFoundError:  # pruned by another process meanwhile
            pass
    for old in sorted(used, key=used.get, reverse=True)[keep:]:
        # A process that has it open keeps reading it; the next one to need it downloads it again.
        old.unlink(missing_ok=True)
        old.with_suffix(".lock").unlink(missing_ok=True)
        logger.info("Checkpoint copy %s removed from the cache (keeping the %d used last)", old.name, keep)


def _download(storage: Storage, name: str, *, target: Path, etag: str, sha256: str) -> None:
    global _downloads
    descriptor, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            written = storage.object_download(name, handle, etag=etag)
        if sha256 and written != sha256:
            raise CheckpointCacheError(
                f"{name}: the downloaded checkpoint has SHA-256 {written}, the store recorded {sha256}"
            )
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    _downloads += 1
    logger.info("Checkpoint %s copied from the object store to %s", name, target)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_count() -> int:
    """How many checkpoints this process has downloaded into the cache (tests check the cache with it)."""
    return _downloads
