"""Writes for the images app: uploads, stored images, thumbnails.

An upload is stored file by file, each in its own small transaction, so one bad
file never loses the others. Files are content-addressed
(``images/ab/cd/<sha256>.<ext>``), which makes re-uploads duplicates and lets a
file whose row failed be reused by the next attempt instead of lingering.
Predictions are queued on commit and made in the cluster; the prediction worker
also makes each image's thumbnail from the same decoded image. Images that no
model will predict get theirs from the ``make_thumbnails`` task instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import IO, NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django_q.tasks import async_task

from ml.decode import ImageDecodeError, ImageInfo, inspect_image, make_thumbnail

from .models import Image, UploadBatch
from .uploads import IncomingFile, iter_incoming_files

logger = logging.getLogger(__name__)

# Work is queued (and the batch's counts saved) every this many files, so a
# long import shows progress and the cluster starts before the import ends.
UPLOAD_FLUSH_EVERY = 200
THUMBNAIL_TASK_SIZE = 100

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class FileStatus:
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True)
class StoredImage:
    image: Image
    created: bool


def image_file_name(*, sha256: str, image_format: str) -> str:
    extension = _EXTENSIONS.get(image_format, image_format.lower() or "bin")
    return f"images/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def thumbnail_file_name(*, sha256: str) -> str:
    return f"thumbnails/{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"


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

    file_name, wrote_file = _store_content(image_file_name(sha256=sha256, image_format=info.format), data)
    try:
        with transaction.atomic():
            image = Image.objects.create(
                file=file_name,
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
            _forget_file(file_name, wrote_file)
            raise
        if existing.file.name != file_name:
            _forget_file(file_name, wrote_file)
        return StoredImage(existing, created=False)
    except BaseException:
        _forget_file(file_name, wrote_file)
        raise
    return StoredImage(image, created=True)


class SavedFile(NamedTuple):
    name: str
    wrote: bool  # False when an identical file was there already


def _store_content(name: str, data: bytes) -> SavedFile:
    """Save ``data`` at ``name``; reuse a file already there (content-addressed)."""
    if default_storage.exists(name) and default_storage.size(name) == len(data):
        return SavedFile(name, wrote=False)
    # An unexpected file at that name (a partial write) is left alone: the
    # storage picks a free name next to it.
    return SavedFile(default_storage.save(name, ContentFile(data)), wrote=True)


def _forget_file(name: str, wrote_file: bool) -> None:
    if not wrote_file:
        return
    try:
        default_storage.delete(name)
    except OSError:
        logger.exception("Could not remove %s after its row failed", name)


def images_delete(*, images) -> int:
    """Delete images (a queryset or a list) and, once that commits, their files."""
    rows = list(images)
    names = [name for image in rows for name in (image.file.name, image.thumbnail.name) if name]
    with transaction.atomic():
        deleted = Image.objects.filter(pk__in=[image.pk for image in rows]).delete()[1].get(Image._meta.label, 0)
        transaction.on_commit(partial(_files_delete, names))
    return deleted


def _files_delete(names: list[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("Could not remove %s of a deleted image", name)


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
        transaction.on_commit(partial(_queue_follow_up_work, image_ids=list(accepted_ids), batch=batch, user=user))


def _queue_follow_up_work(*, image_ids: list[int], batch: UploadBatch, user) -> None:
    try:
        from predictions.services.jobs import enqueue_predictions
    except ImportError as exc:
        raise ImproperlyConfigured(
            "predictions.services.jobs.enqueue_predictions is missing: uploaded images cannot be "
            "queued for prediction"
        ) from exc
    job = enqueue_predictions(image_ids=image_ids, batch=batch, reason="upload", user=user)
    if job is None or job.total < len(set(image_ids)):
        # Some images will not be predicted (no active model, or a prediction
        # already there), so no prediction worker decodes them: thumbnail them
        # on their own. The task skips images that have a thumbnail.
        thumbnails_queue(image_ids=image_ids)


def thumbnails_queue(*, image_ids: list[int]) -> None:
    """Queue ``make_thumbnails`` tasks for ``image_ids`` (call it once the images are committed)."""
    for start in range(0, len(image_ids), THUMBNAIL_TASK_SIZE):
        async_task("images.tasks.make_thumbnails", image_ids[start : start + THUMBNAIL_TASK_SIZE])


# --- thumbnails ------------------------------------------------------------------


def thumbnails_create(*, image_ids: Iterable[int]) -> int:
    """Make the missing thumbnails of ``image_ids``; return how many were made.

    Idempotent. An image that cannot be thumbnailed keeps none (the admin shows a
    placeholder) and does not stop the others.
    """
    made = 0
    images = Image.objects.filter(pk__in=list(image_ids), thumbnail="").only("pk", "file", "sha256", "original_name")
    for image in images:
        try:
            with image.file.open("rb") as fp:
                jpeg = make_thumbnail(
                    fp, name=image.original_name, size=settings.THUMBNAIL_SIZE, max_pixels=settings.IMAGE_MAX_PIXELS
                )
            made += thumbnail_store(image_id=image.pk, sha256=image.sha256, jpeg=jpeg)
        except Exception:
            logger.exception("Could not make a thumbnail of image #%s (%s)", image.pk, image.original_name)
    return made


def thumbnail_store(*, image_id: int, sha256: str, jpeg: bytes) -> bool:
    """Save ``jpeg`` as the thumbnail of an image that has none; whether it was set.

    Idempotent and safe against a concurrent maker: the first to set the field
    wins, and a loser's file is removed unless it is the winner's (same content
    address).
    """
    return bool(thumbnails_set(saved={image_id: thumbnail_file_save(sha256=sha256, jpeg=jpeg)}))


def thumbnail_file_save(*, sha256: str, jpeg: bytes) -> SavedFile:
    """Write a thumbnail file, without touching the database (so any thread may call it).

    Hand the result to :func:`thumbnails_set`.
    """
    return _store_content(thumbnail_file_name(sha256=sha256), jpeg)


def thumbnails_set(*, saved: Mapping[int, SavedFile]) -> int:
    """Point images without a thumbnail at their saved files, in one transaction; how many were set.

    An image that got a thumbnail meanwhile keeps it, and the file saved for it
    here is removed unless it is the same file.
    """
    with transaction.atomic():
        set_ids = {
            image_id
            for image_id, file in saved.items()
            if Image.objects.filter(pk=image_id, thumbnail="").update(thumbnail=file.name)
        }
    others = {image_id: file for image_id, file in saved.items() if image_id not in set_ids}
    if others:
        current = dict(Image.objects.filter(pk__in=others).values_list("pk", "thumbnail"))
        for image_id, file in others.items():
            if current.get(image_id) != file.name:
                _forget_file(file.name, file.wrote)
    return len(set_ids)
