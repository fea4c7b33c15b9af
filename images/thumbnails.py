"""Thumbnails: the small JPEG the changelists and the review screen show for each image.

Two ways to make one, both idempotent:

- The prediction worker makes it from the image it decodes for the model (one
  decode per file): its decode threads write the file with
  ``thumbnail_file_save`` (no database access, so any thread may), and the
  worker points the images at their files with ``thumbnails_set`` in one
  transaction.
- Images that no model will decode (no active model, already predicted, a model
  that cannot run) get theirs from the ``images.tasks.make_thumbnails`` task,
  queued by ``thumbnails_queue`` once the images are committed, which runs
  ``thumbnails_create``.

The first maker to set an image's thumbnail wins; a loser's file is removed
unless it is the winner's (same content address, images.storage).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from django.conf import settings
from django.db import transaction
from django_q.tasks import async_task

from ml.decode import make_thumbnail
from reviewtool.batching import id_chunks

from .models import Image
from .storage import SavedFile, file_forget, file_store, thumbnail_file_name

logger = logging.getLogger(__name__)

THUMBNAIL_TASK_SIZE = 100


def thumbnails_queue(*, image_ids: list[int]) -> None:
    """Queue ``make_thumbnails`` tasks for ``image_ids`` (call it once the images are committed)."""
    for chunk in id_chunks(image_ids, THUMBNAIL_TASK_SIZE):
        async_task("images.tasks.make_thumbnails", chunk)


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
    return file_store(thumbnail_file_name(sha256=sha256), jpeg)


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
                file_forget(file)
    return len(set_ids)
