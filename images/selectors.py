"""Reads of the images app: which stored file a media URL names.

Reads about images relative to a model version (the active prediction, review
status, upload progress) belong to the predictions app:
predictions.selectors.images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.core.files.storage import default_storage

from .hooks import private_media_kind
from .models import Image


class MediaKind:
    IMAGE = "image"
    THUMBNAIL = "thumbnail"
    EXPORT = "export"  # a download: needs images.export_image, served as an attachment


# Stored names are content-addressed (see images.storage), so the sha256 in
# the path finds the row through its unique index; the name must then match
# exactly what the row holds.
_CONTENT_ADDRESSED = re.compile(r"^(images|thumbnails)/[0-9a-f]{2}/[0-9a-f]{2}/(?P<sha256>[0-9a-f]{64})[^/]*$")


@dataclass(frozen=True)
class _Paths:
    file: str
    thumbnail: str


def media_file_kind(*, path: str) -> str | None:
    """What ``path`` (a storage name) is, or None when nothing in the database points at it.

    An image's file or thumbnail is looked up here; any other name only through
    the apps registered in images.hooks (the predictions app's export files).
    """
    if not path or "\x00" in path or "\\" in path or path.startswith("/") or ".." in path.split("/"):
        return None
    match = _CONTENT_ADDRESSED.match(path)
    if match:
        row = Image.objects.filter(sha256=match["sha256"]).values_list("file", "thumbnail").first()
        if row is None:
            return None
        paths = _Paths(*row)
        if path == paths.file:
            return MediaKind.IMAGE
        if path == paths.thumbnail:
            return MediaKind.THUMBNAIL
        return None
    return private_media_kind(path)


def media_signed_url(*, path: str, kind: str) -> str | None:
    """A short-lived signed URL of the object store for ``path``, or None where Django serves the file.

    Call it only after the permission check: whoever holds the URL can fetch
    the object until it expires (S3_URL_SECONDS). An export comes as a
    download under its own file name. A storage on this machine's disk has no
    such URL: the view streams the file (or hands it to the front server).
    """
    signed_url = getattr(default_storage, "signed_url", None)
    if signed_url is None or not settings.S3_MEDIA_REDIRECT:
        return None
    download_name = path.rsplit("/", 1)[-1] if kind == MediaKind.EXPORT else None
    return signed_url(path, seconds=settings.S3_URL_SECONDS, download_name=download_name)
