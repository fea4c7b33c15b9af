"""Writes for the images app: an upload, one stored image, deleting images.

An upload is stored file by file, each in its own small transaction, so one bad
file never loses the others. Files are content-addressed (images.storage), which
makes re-uploads duplicates and lets a file whose row failed be reused by the
next attempt instead of lingering.

Once an upload's images are committed, the post-upload hook runs
(images.hooks.post_upload_run): the predictions app, which registers there,
queues them for the model, and its worker makes each image's thumbnail from the
same decode. The images no handler takes get their thumbnails from the
``make_thumbnails`` task (images.thumbnails).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import IO

from django.conf import settings
from django.db import IntegrityError, transaction

from ml.decode import ImageDecodeError, ImageInfo, inspect_image

from .hooks import post_upload_run
from .models import Image, UploadBatch
from .storage import file_forget, file_store, files_delete, image_file_name
from .thumbnails import thumbnails_queue
from .uploads import IncomingFile, iter_incoming_files

logger = logging.getLogger(__name__)

# Work is queued (and the batch's counts saved) every this many files, so a
# long import shows progress and the cluster starts before the import ends.
UPLOAD_FLUSH_EVERY = 200


class FileStatus:
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class StoredImage:
    image: Image
    created: bool


# --- one image -------------------------------------------------------------------


def image_create(
    *,
    data: bytes,
    name: str,
    user=None,
    batch: UploadBatch | None = None,
    info: ImageInfo | None = None,
    sha256: str | None = None,
) -> StoredImage:
    """Store one image (validated here unless ``info`` is given) and its row.

    Raises ImageDecodeError for a file that is not a usable image. Content that
    is already stored returns the existing image with ``created=False``, also
    when another upload of the same file wins a race to the row.
    """
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    existing = Image.objects.filter(sha256=sha256).first()
    if existing is not None:
        return StoredImage(existing, created=False)
    if info is None:
        info = inspect_image(data, name=name, max_pixels=settings.IMAGE_MAX_PIXELS)

    saved = file_store(image_file_name(sha256=sha256, image_format=info.format), data)
    try:
        with transaction.atomic():
            image = Image.objects.create(
                file=saved.name,
                sha256=sha256,
                original_name=name[:255],
                width=info.width,
                height=info.height,
                format=info.format,
                size_bytes=len(data),
                uploaded_by=user,
                batch=batch,
            )
    except IntegrityError:
        # Another upload of the same content committed its row first.
        existing = Image.objects.filter(sha256=sha256).first()
        if existing is None:
            file_forget(saved)
            raise
        if existing.file.name != saved.name:
            file_forget(saved)
        return StoredImage(existing, created=False)
    except BaseException:
        file_forget(saved)
        raise
    return StoredImage(image, created=True)


def images_delete(*, images) -> int:
    """Delete images (a queryset or a list) and, once that commits, their files."""
    rows = list(images)
    names = [name for image in rows for name in (image.file.name, image.thumbnail.name) if name]
    with transaction.atomic():
        deleted = Image.objects.filter(pk__in=[image.pk for image in rows]).delete()[1].get(Image._meta.label, 0)
        transaction.on_commit(partial(files_delete, names))
    return deleted


# --- uploads ---------------------------------------------------------------------


def upload_files(
    *,
    files: Iterable[tuple[str, IO[bytes]]],
    user,
    source: str = UploadBatch.Source.ADMIN,
    name: str = "",
) -> UploadBatch:
    """Store an upload as one batch; see batch_add_files."""
    batch = batch_create(user=user, source=source, name=name)
    return batch_add_files(batch=batch, files=files, user=user)


def batch_create(*, user, source: str = UploadBatch.Source.ADMIN, name: str = "") -> UploadBatch:
    return UploadBatch.objects.create(name=name[:200], source=source, created_by=user)


def batch_add_files(
    *,
    batch: UploadBatch,
    files: Iterable[tuple[str, IO[bytes]]],
    user=None,
    on_file: Callable[[dict], None] | None = None,
) -> UploadBatch:
    """Validate, dedupe and store ``files`` (zips expanded) into ``batch``.

    ``files`` is consumed lazily, so a command can stream thousands of files.
    Every UPLOAD_FLUSH_EVERY files the batch's counts and report are saved and,
    on commit, thumbnails and predictions are queued for the new images.
    ``on_file`` is called with each report entry (a progress bar).
    """
    user = user if user is not None else batch.created_by
    entries: list[dict] = []
    accepted_ids: list[int] = []
    try:
        for incoming in iter_incoming_files(files):
            entry = _upload_one(incoming, batch=batch, user=user)
            entries.append(entry)
            if entry["status"] == FileStatus.ACCEPTED:
                accepted_ids.append(entry["image_id"])
            if on_file is not None:
                on_file(entry)
            if len(entries) >= UPLOAD_FLUSH_EVERY:
                _batch_flush(batch, entries, accepted_ids, user)
                entries, accepted_ids = [], []
    finally:
        # Also when the caller's file iterator fails: what was stored is recorded and queued.
        _batch_flush(batch, entries, accepted_ids, user)
    return batch


def _upload_one(incoming: IncomingFile, *, batch: UploadBatch, user) -> dict:
    def entry(status: str, reason: str = "", image_id: int | None = None) -> dict:
        reason = "; ".join(part for part in (incoming.note, reason) if part)
        return {"file": incoming.label, "status": status, "reason": reason, "image_id": image_id}

    if incoming.rejected:
        return entry(FileStatus.REJECTED, incoming.reason)
    try:
        stored = image_create(data=incoming.data, name=incoming.name, user=user, batch=batch)
    except ImageDecodeError as exc:
        return entry(FileStatus.REJECTED, exc.reason)
    except Exception as exc:  # storage or database trouble must not lose the other files
        logger.exception("Could not store %s", incoming.label)
        return entry(FileStatus.REJECTED, f"could not be stored ({exc.__class__.__name__}: {exc})")
    if not stored.created:
        return entry(FileStatus.DUPLICATE, _duplicate_reason(stored.image, batch), stored.image.pk)
    return entry(FileStatus.ACCEPTED, image_id=stored.image.pk)


def _duplicate_reason(existing: Image, batch: UploadBatch) -> str:
    if existing.batch_id == batch.pk:
        return f"same content as {existing.original_name} earlier in this upload (image #{existing.pk})"
    return f"already uploaded as {existing.original_name} (image #{existing.pk})"


def _batch_flush(batch: UploadBatch, entries: list[dict], accepted_ids: list[int], user) -> None:
    if not entries:
        return
    statuses = [entry["status"] for entry in entries]
    batch.accepted_count += statuses.count(FileStatus.ACCEPTED)
    batch.duplicate_count += statuses.count(FileStatus.DUPLICATE)
    batch.rejected_count += statuses.count(FileStatus.REJECTED)
    batch.report = [*batch.report, *entries]
    batch.save(update_fields=["accepted_count", "duplicate_count", "rejected_count", "report"])
    if accepted_ids:
        transaction.on_commit(partial(_follow_up_queue, image_ids=list(accepted_ids), batch=batch, user=user))


def _follow_up_queue(*, image_ids: list[int], batch: UploadBatch, user) -> None:
    # Runs on commit. The handlers (predictions) take the images their worker
    # will decode; the others are thumbnailed on their own. The thumbnail task
    # skips images that have one by then.
    taken = post_upload_run(image_ids=image_ids, batch=batch, user=user)
    lacking = [image_id for image_id in image_ids if image_id not in taken]
    if lacking:
        thumbnails_queue(image_ids=lacking)
