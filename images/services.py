"""Writes for the images app: an upload, one stored image, deleting images.

An upload is stored file by file, each in its own small transaction, so one bad
file never loses the others. Files are content-addressed (images.storage), which
makes re-uploads duplicates and lets a file whose row failed be reused by the
next attempt instead of lingering. Each image's perceptual hash comes from the
decode that validates it; a new image whose hash is close to a stored one is a
near-duplicate: stored, and reported ("looks like image #42, distance 3"); see
images.duplicates.

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
from reviewtool.batching import IN_QUERY_MAX_IDS, id_chunks

from .duplicates import HashIndex
from .hooks import post_upload_run
from .models import Image, UploadBatch
from .storage import file_forget, file_store, files_delete, image_file_name
from .thumbnails import thumbnails_queue
from .uploads import InspectedFile, iter_incoming_files, iter_inspected

logger = logging.getLogger(__name__)

# Work is queued (and the batch's counts saved) after the first UPLOAD_FIRST_FLUSH
# files, so the cluster predicts while the rest still arrive, then after as many
# files again as were flushed before (doubling), at most every UPLOAD_FLUSH_EVERY:
# each flush rewrites the batch's report, whose size grows with the upload.
UPLOAD_FIRST_FLUSH = 32
UPLOAD_FLUSH_EVERY = 200


class FileStatus:
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


# Said of a file sent again into the upload that stored it (a retry after a dropped connection).
RESENT_REASON = "already stored in this upload"


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
    looked_up: bool = False,
) -> StoredImage:
    """Store one image (validated here unless ``info`` is given) and its row.

    Raises ImageDecodeError for a file that is not a usable image. Content that
    is already stored returns the existing image with ``created=False``, also
    when another upload of the same file wins a race to the row. ``looked_up``:
    the caller has just looked ``sha256`` up among the stored images and not
    found it, so it is not looked up again (content stored since then still
    ends as ``created=False``, through the unique sha256).
    """
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    existing = None if looked_up else Image.objects.filter(sha256=sha256).first()
    if existing is not None:
        return StoredImage(existing, created=False)
    if info is None:
        info = inspect_image(data, name=name, max_pixels=settings.IMAGE_MAX_PIXELS, with_hash=True)

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
                phash=info.phash,
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


@dataclass(frozen=True)
class HashBackfill:
    hashed: int
    failed: int  # files missing or no longer decodable (logged)


def images_phash_backfill(*, on_image: Callable[[], None] | None = None) -> HashBackfill:
    """Compute the perceptual hash of the stored images that lack one (uploaded before hashes were), from their files.

    The same decode as an upload's (``inspect_image(..., with_hash=True)``), so
    the hashes compare with the new ones. Written a chunk at a time.
    """
    hashed = failed = 0
    missing = list(Image.objects.filter(phash__isnull=True).order_by("pk").values_list("pk", flat=True))
    for chunk in id_chunks(missing, IN_QUERY_MAX_IDS):
        updated = []
        for image in Image.objects.filter(pk__in=chunk).only("pk", "file", "original_name").order_by("pk"):
            try:
                with image.file.storage.open(image.file.name, "rb") as handle:
                    info = inspect_image(
                        handle, name=image.original_name, max_pixels=settings.IMAGE_MAX_PIXELS, with_hash=True
                    )
            except (ImageDecodeError, OSError, ValueError) as exc:
                logger.warning("No hash for image #%s (%s): %s", image.pk, image.original_name, exc)
                failed += 1
            else:
                image.phash = info.phash
                updated.append(image)
            if on_image is not None:
                on_image()
        Image.objects.bulk_update(updated, ["phash"])
        hashed += len(updated)
    return HashBackfill(hashed=hashed, failed=failed)


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
    overlap_share: float | None = None,
) -> UploadBatch:
    """Store an upload as one batch; see batch_add_files."""
    batch = batch_create(user=user, source=source, name=name, overlap_share=overlap_share)
    return batch_add_files(batch=batch, files=files, user=user)


def batch_create(
    *, user, source: str = UploadBatch.Source.ADMIN, name: str = "", overlap_share: float | None = None
) -> UploadBatch:
    return UploadBatch.objects.create(name=name[:200], source=source, created_by=user, overlap_share=overlap_share)


def batch_add_files(
    *,
    batch: UploadBatch,
    files: Iterable[tuple[str, IO[bytes]]],
    user=None,
    on_file: Callable[[dict], None] | None = None,
) -> UploadBatch:
    """Validate, dedupe and store ``files`` (zips expanded) into ``batch``.

    ``files`` is consumed lazily, so a command can stream thousands of files.
    After the first UPLOAD_FIRST_FLUSH files, then at doubling intervals up to
    every UPLOAD_FLUSH_EVERY files, the batch's counts and report are saved and,
    on commit, thumbnails and predictions are queued for the new images.
    ``on_file`` is called with each report entry, plus ``sent_index``: the
    position in ``files`` of the file it came from (a zip's members share their
    archive's). Files are read ahead of the one being stored, so a caller that
    wants an entry's file cannot tell from the order in which ``files`` is read.

    A batch may be filled by several calls (the upload page sends a large
    selection as several requests). A file sent again into the batch that has
    it in its report already (a retry after a dropped connection) is neither
    stored nor counted again: its entry, given only to ``on_file``, has
    ``resent`` set and, for a stored image, the reason RESENT_REASON.
    """
    user = user if user is not None else batch.created_by
    entries: list[dict] = []
    earlier = _Recorded(batch.report)  # what the batch's earlier calls recorded
    stored_now: set[int] = set()
    near_duplicates = _NearDuplicates()
    flushed = 0
    inspected = iter_inspected(iter_incoming_files(files), max_pixels=settings.IMAGE_MAX_PIXELS, stored=_is_stored)
    try:
        for checked in inspected:
            entry = _upload_one(checked, batch=batch, user=user, near_duplicates=near_duplicates, stored_now=stored_now)
            if earlier.has(entry):
                entry = _resent(entry)
            else:
                entries.append(entry)
                if entry["status"] == FileStatus.ACCEPTED:
                    stored_now.add(entry["image_id"])
            if on_file is not None:
                on_file({**entry, "sent_index": checked.incoming.sent_index})
            if len(entries) >= _flush_size(flushed=flushed):
                _batch_flush(batch, entries, user)
                flushed += len(entries)
                entries = []
    finally:
        inspected.close()  # its threads stop now, not when the generator is collected
        # Also when the caller's file iterator fails: what was stored is recorded and queued.
        _batch_flush(batch, entries, user)
    return batch


def _is_stored(sha256: str) -> bool:
    return Image.objects.filter(sha256=sha256).exists()


def _flush_size(*, flushed: int) -> int:
    """How many entries the next flush waits for, ``flushed`` entries into a call: 32, 32, 64, 128, 200, 200..."""
    return min(UPLOAD_FLUSH_EVERY, max(UPLOAD_FIRST_FLUSH, flushed))


def batch_add_rejections(*, batch: UploadBatch, rejections: Iterable[tuple[str, str]]) -> UploadBatch:
    """Count and report files refused before they reached the upload, as (name, reason):
    the JSON endpoint's files that did not decode, so its batch accounts for every file sent."""
    entries = [
        {"file": name, "status": FileStatus.REJECTED, "reason": reason, "image_id": None} for name, reason in rejections
    ]
    _batch_flush(batch, entries, batch.created_by)
    return batch


def _entry_key(entry: dict) -> tuple:
    return (entry["file"], entry["status"], entry.get("image_id"))


class _Recorded:
    """What a batch's report holds: each entry's (file, outcome, image), and the images it stored.

    A file whose entry is there already was sent again (an accepted image is
    there once, whatever the file was called)."""

    def __init__(self, report: list[dict]) -> None:
        self.keys: set[tuple] = set()
        self.stored_ids: set[int] = set()
        for entry in report:
            self.add(entry)

    def add(self, entry: dict) -> None:
        self.keys.add(_entry_key(entry))
        if entry["status"] == FileStatus.ACCEPTED and entry.get("image_id"):
            self.stored_ids.add(entry["image_id"])

    def has(self, entry: dict) -> bool:
        """Whether ``entry`` is in the report already: the same file with the same outcome, or its image stored."""
        if entry["status"] == FileStatus.ACCEPTED:
            return entry["image_id"] in self.stored_ids
        return _entry_key(entry) in self.keys


def _resent(entry: dict) -> dict:
    if entry["status"] == FileStatus.ACCEPTED:
        return {**entry, "reason": RESENT_REASON, "resent": True}
    return {**entry, "reason": f"{entry['reason']} (already in this upload's report)", "resent": True}


class _NearDuplicates:
    """The stored hashes for one upload, loaded with its first new image (an upload of known files loads nothing)."""

    def __init__(self) -> None:
        self._index: HashIndex | None = None

    def check(self, image: Image) -> dict:
        """Report fields for ``image`` (just stored): the image it looks like and the distance, or none."""
        if image.phash is None:
            return {}
        if self._index is None:
            self._index = HashIndex.load()
        found = self._index.nearest(image.phash, exclude=image.pk)
        self._index.add(image.pk, image.phash)
        if found is None:
            return {}
        other_id, distance = found
        name = Image.objects.filter(pk=other_id).values_list("original_name", flat=True).first() or "?"
        return {"reason": f"looks like image #{other_id} ({name}), distance {distance}",
                "duplicate_of": other_id, "distance": distance}  # fmt: skip


def _upload_one(
    checked: InspectedFile, *, batch: UploadBatch, user, near_duplicates: _NearDuplicates, stored_now: set[int]
) -> dict:
    incoming = checked.incoming

    def entry(status: str, reason: str = "", image_id: int | None = None, **extra) -> dict:
        reason = "; ".join(part for part in (incoming.note, reason) if part)
        return {"file": incoming.label, "status": status, "reason": reason, "image_id": image_id, **extra}

    if incoming.rejected:
        return entry(FileStatus.REJECTED, incoming.reason)
    try:
        stored = image_create(data=incoming.data, name=incoming.name, user=user, batch=batch,
                              info=checked.info, sha256=checked.sha256, looked_up=checked.looked_up)  # fmt: skip
    except ImageDecodeError as exc:
        return entry(FileStatus.REJECTED, exc.reason)
    except Exception as exc:  # storage or database trouble must not lose the other files
        logger.exception("Could not store %s", incoming.label)
        return entry(FileStatus.REJECTED, f"could not be stored ({exc.__class__.__name__}: {exc})")
    if not stored.created:
        existing = stored.image
        if (
            existing.batch_id == batch.pk
            and existing.original_name == incoming.name[:255]
            and existing.pk not in stored_now
        ):
            # This upload's own image, sent again by a later request: resent when
            # the batch's report has it (batch_add_files), else stored by an
            # attempt that was cut off before recording it, and recorded now.
            return entry(FileStatus.ACCEPTED, image_id=existing.pk)
        return entry(FileStatus.DUPLICATE, _duplicate_reason(existing, batch), existing.pk)
    try:
        near = near_duplicates.check(stored.image)
    except Exception:  # a failed comparison must not lose a stored image
        logger.exception("Could not compare %s with the stored images", incoming.label)
        near = {}
    return entry(FileStatus.ACCEPTED, image_id=stored.image.pk, **near)


def _duplicate_reason(existing: Image, batch: UploadBatch) -> str:
    if existing.batch_id == batch.pk:
        return f"same content as {existing.original_name} earlier in this upload (image #{existing.pk})"
    return f"already uploaded as {existing.original_name} (image #{existing.pk})"


def _batch_flush(batch: UploadBatch, entries: list[dict], user) -> None:
    """Add ``entries`` to the batch's counts and report, and queue the new images' follow-up work on commit.

    The batch row is locked and, when another request wrote to it meanwhile (a
    retry sent while the first attempt was still being stored), read again:
    no entry of either is lost, and what the other recorded is not counted again.
    """
    if not entries:
        return
    counted = ["accepted_count", "duplicate_count", "rejected_count"]
    with transaction.atomic():
        current = UploadBatch.objects.select_for_update().filter(pk=batch.pk).values_list(*counted).get()
        if current != tuple(getattr(batch, field) for field in counted):
            batch.refresh_from_db(fields=[*counted, "report"])
            recorded = _Recorded(batch.report)
            entries = [entry for entry in entries if not recorded.has(entry)]
        statuses = [entry["status"] for entry in entries]
        batch.accepted_count += statuses.count(FileStatus.ACCEPTED)
        batch.duplicate_count += statuses.count(FileStatus.DUPLICATE)
        batch.rejected_count += statuses.count(FileStatus.REJECTED)
        batch.report = [*batch.report, *entries]
        batch.save(update_fields=[*counted, "report"])
    accepted_ids = [entry["image_id"] for entry in entries if entry["status"] == FileStatus.ACCEPTED]
    if accepted_ids:
        transaction.on_commit(partial(_follow_up_queue, image_ids=accepted_ids, batch=batch, user=user))


def _follow_up_queue(*, image_ids: list[int], batch: UploadBatch, user) -> None:
    # Runs on commit. The handlers (predictions) take the images their worker
    # will decode; the others are thumbnailed on their own. The thumbnail task
    # skips images that have one by then.
    taken = post_upload_run(image_ids=image_ids, batch=batch, user=user)
    lacking = [image_id for image_id in image_ids if image_id not in taken]
    if lacking:
        thumbnails_queue(image_ids=lacking)
