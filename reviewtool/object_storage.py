"""Media, exports and checkpoints on an S3-compatible object store (``MEDIA_STORAGE=s3``).

The settings point the "default" and "weights" storages at ``PrivateS3Storage``
(reviewtool/settings.py). Every object is private: written with an ACL that
lets only the bucket owner read it, never given a public URL. ``url()`` answers the app's own media URL, as
the file-system storage does, so pages link to the media view; the view checks
permissions and then redirects to a presigned URL that expires within
``S3_URL_SECONDS`` (``signed_url``). Names are never overwritten: a second
checkpoint or export under a taken name gets a free name next to it, as on disk.

Each object carries the SHA-256 of its content in its metadata (computed at
upload, ``x-amz-meta-sha256``), so a worker can tell which checkpoint it holds
from a HEAD request and download a model once per machine
(predictions.checkpoint_cache). Objects written by other tools have no such
metadata; their ETag (the store's own content hash) names them instead.

Only this module imports boto3 and django-storages, and only the settings of
``MEDIA_STORAGE=s3`` import this module.
"""

from __future__ import annotations

import hashlib
from typing import IO, NamedTuple
from urllib.parse import urljoin

from django.utils.encoding import filepath_to_uri
from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage
from storages.utils import clean_name, is_seekable, setting

SHA256_METADATA_KEY = "sha256"
_DOWNLOAD_CHUNK_BYTES = 1024 * 1024


class ObjectFingerprint(NamedTuple):
    """What the store says identifies an object's content, without downloading it."""

    sha256: str  # "" when the object was written without our metadata
    etag: str  # the store's content hash, quotes removed


class ObjectChangedError(OSError):
    """The object was replaced between its fingerprint and its download."""


class PrivateS3Storage(S3Storage):
    """S3 storage whose objects are private and reached only through short-lived signed URLs."""

    # Only the bucket owner may read an object: the one canned ACL that AWS
    # buckets with ACLs disabled (their default since April 2023) accept besides
    # none at all, where "private" is refused. Sent rather than left out, because
    # a store's default for an object without an ACL is not always private (moto
    # serves multipart uploads without one to anybody). S3_DEFAULT_ACL overrides it.
    default_acl = "bucket-owner-full-control"
    querystring_auth = True
    # A checkpoint uploaded under a taken name must not replace the file a
    # validated version points at.
    file_overwrite = False
    # Signature version 4: required by every AWS region opened since 2014 and by
    # most S3-compatible stores; it also bounds a presigned URL to 7 days.
    signature_version = "s3v4"
    # A custom domain would make url() return an unsigned URL.
    custom_domain = None

    def get_default_settings(self):
        # Where the app serves a name: the media view, as FileSystemStorage's base_url.
        return {**super().get_default_settings(), "base_url": setting("MEDIA_URL")}

    def url(self, name, parameters=None, expire=None, http_method=None):
        """The app's URL of ``name`` (the media view, which checks permissions), never the store's.

        So every page and JSON payload that shows a file (``image.file.url``)
        links to the permission check, as with the file-system storage; only
        the media view asks for a presigned URL (``signed_url``), per request.
        """
        return urljoin(self.base_url, filepath_to_uri(clean_name(name)))

    def signed_url(self, name: str, *, seconds: int, download_name: str | None = None) -> str:
        """The store's GET URL for ``name``, expiring after ``seconds``; a download if ``download_name`` is given."""
        parameters = {}
        if download_name:
            parameters["ResponseContentDisposition"] = content_disposition_header(True, download_name)
        return super().url(name, parameters=parameters, expire=seconds)

    def _get_write_parameters(self, name, content=None):
        params = super()._get_write_parameters(name, content)
        if content is not None and is_seekable(content):
            params["Metadata"] = {**params.get("Metadata", {}), SHA256_METADATA_KEY: _content_sha256(content)}
        return params

    def object_fingerprint(self, name: str) -> ObjectFingerprint:
        """The object's recorded SHA-256 and its ETag, from one HEAD request; FileNotFoundError if absent."""
        key = self._normalize_name(clean_name(name))
        head = self._head(key)
        return ObjectFingerprint(
            sha256=(head.get("Metadata") or {}).get(SHA256_METADATA_KEY, "").lower(),
            etag=head["ETag"].strip('"'),
        )

    def object_download(self, name: str, destination: IO[bytes], *, etag: str) -> str:
        """Write the object into ``destination`` if its ETag is still ``etag``; return the SHA-256 of what was written.

        The condition makes the download the very object the fingerprint
        described: a replaced object fails instead of filling a cache entry
        named after the old one.
        """
        from botocore.exceptions import ClientError

        key = self._normalize_name(clean_name(name))
        try:
            response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key, IfMatch=f'"{etag}"')
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"{key} is not in bucket {self.bucket_name}") from exc
            if code in ("PreconditionFailed", "412"):
                raise ObjectChangedError(f"{key} changed in bucket {self.bucket_name} while it was read") from exc
            raise
        digest = hashlib.sha256()
        body = response["Body"]
        try:
            for chunk in iter(lambda: body.read(_DOWNLOAD_CHUNK_BYTES), b""):
                digest.update(chunk)
                destination.write(chunk)
        finally:
            body.close()
        return digest.hexdigest()

    def _head(self, key: str) -> dict:
        from botocore.exceptions import ClientError

        try:
            return self.connection.meta.client.head_object(Bucket=self.bucket_name, Key=key)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"{key} is not in bucket {self.bucket_name}") from exc
            raise


def _content_sha256(content) -> str:
    digest = hashlib.sha256()
    content.seek(0)
    while chunk := content.read(_DOWNLOAD_CHUNK_BYTES):
        digest.update(chunk if isinstance(chunk, bytes) else chunk.encode())
    content.seek(0)
    return digest.hexdigest()
