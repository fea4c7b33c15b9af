"""The images app's extension points: how another app takes part without images importing it.

``images`` knows nothing of predictions. An app that wants to act on new images
(``predictions`` queues them for the model) registers a function here from its
``AppConfig.ready()``; images calls it and never imports that app.

- ``post_upload_register(func)``: the post-upload hook. Once an upload's images
  are committed, images.services calls ``post_upload_run(image_ids=..., batch=...,
  user=...)``, which calls every registered ``func`` with those keywords. A
  handler returns the ids whose file its own work will decode (the prediction
  worker makes the thumbnail from the image it decodes for the model); images
  queues a thumbnail task for every other id. With no handler (images alone),
  every image gets its thumbnail from that task.
- ``private_media_register(func)``: other apps' files in the private media
  storage (predictions' export files). The media view (images.views, through
  images.selectors.media_file_kind) serves a name that no image points at only
  if a registered ``func(path)`` says what it is (an images.selectors.MediaKind
  value); otherwise it answers 404.
- ``credentials_register(func)``: who a request names by credentials of its own
  rather than a session (predictions: API tokens, ``Authorization: Bearer``), so a
  script fetches the ``image_url`` of an export. The media view asks
  ``credentials_user(request)``: a ``func(request)`` returns the user its credentials
  name, None when the request carries none it knows, or raises CredentialsRefused
  when they are wrong. With no handler, or None from all, the session decides.

Registration is idempotent (``ready()`` may run more than once in tests), and
this module imports nothing of any other app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

PostUploadHandler = Callable[..., Iterable[int] | None]
MediaResolver = Callable[[str], str | None]
CredentialsHandler = Callable[[Any], Any]  # request -> user or None

_post_upload: list[PostUploadHandler] = []
_private_media: list[MediaResolver] = []
_credentials: list[CredentialsHandler] = []


class CredentialsRefused(Exception):
    """The request's own credentials are wrong; ``str()`` says how (a 401 for the client)."""


def post_upload_register(func: PostUploadHandler) -> PostUploadHandler:
    """Call ``func(image_ids=..., batch=..., user=...)`` after every upload commits; return the ids it decodes."""
    if func not in _post_upload:
        _post_upload.append(func)
    return func


def post_upload_run(*, image_ids: list[int], batch, user) -> set[int]:
    """Run the post-upload handlers; the ids whose thumbnails their work will make.

    A handler that raises is not caught: the caller's on-commit callback fails
    as it would without the hook (the images are stored, and the upload's
    admin page shows them without predictions).
    """
    taken: set[int] = set()
    for func in _post_upload:
        taken.update(func(image_ids=list(image_ids), batch=batch, user=user) or ())
    return taken


def private_media_register(func: MediaResolver) -> MediaResolver:
    """Let ``func(path)`` vouch for files of its app in the private media storage."""
    if func not in _private_media:
        _private_media.append(func)
    return func


def private_media_kind(path: str) -> str | None:
    """What a registered app says ``path`` is, or None when none knows it."""
    for func in _private_media:
        kind = func(path)
        if kind is not None:
            return kind
    return None


def credentials_register(func: CredentialsHandler) -> CredentialsHandler:
    """Let ``func(request)`` say which user a request's own credentials name."""
    if func not in _credentials:
        _credentials.append(func)
    return func


def credentials_user(request):
    """The user the request's own credentials name, or None (the session decides).

    Raises CredentialsRefused when a registered handler finds them wrong.
    """
    for func in _credentials:
        user = func(request)
        if user is not None:
            return user
    return None
