"""Content-addressed file storage for images and thumbnails, through Django's storage API.

A file is named after the SHA-256 of its image: ``images/ab/cd/<sha256>.<ext>``
(the extension of the detected format, never the client's) and
``thumbnails/ab/cd/<sha256>.jpg``. So the same content always lands at the same
name: a re-upload is a duplicate, a file left by an attempt whose row failed is
reused by the next attempt, and two workers thumbnailing one image write one
file. The private media view (images.views) finds an image's row from the
sha256 in a requested name.

Nothing here touches the database; the callers (images.services,
images.thumbnails) decide when a file is kept or forgotten. Names and contents
go through ``default_storage``, so a cluster on several machines can share a
remote storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NamedTuple

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def image_file_name(*, sha256: str, image_format: str) -> str:
    extension = _EXTENSIONS.get(image_format, image_format.lower() or "bin")
    return f"images/{sha256[:2]}/{sha256[2:4]}/{sha256}.{extension}"


def thumbnail_file_name(*, sha256: str) -> str:
    return f"thumbnails/{sha256[:2]}/{sha256[2:4]}/{sha256}.jpg"


class SavedFile(NamedTuple):
    name: str
    wrote: bool  # False when an identical file was there already


# Positional, like Storage.save(name, content), which it wraps.
def file_store(name: str, data: bytes) -> SavedFile:
    """Save ``data`` at ``name``; reuse a file already there (content-addressed)."""
    if default_storage.exists(name) and default_storage.size(name) == len(data):
        return SavedFile(name, wrote=False)
    # An unexpected file at that name (a partial write) is left alone: the
    # storage picks a free name next to it.
    return SavedFile(default_storage.save(name, ContentFile(data)), wrote=True)


def file_forget(saved: SavedFile) -> None:
    """Remove a file that ``file_store`` wrote and nothing will point at; one it found there stays."""
    if not saved.wrote:
        return
    try:
        default_storage.delete(saved.name)
    except OSError:
        logger.exception("Could not remove %s, which no image points at", saved.name)


def files_delete(names: Iterable[str]) -> None:
    """Remove the files of deleted images; a file that cannot be removed is logged, not raised."""
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            logger.exception("Could not remove %s of a deleted image", name)
