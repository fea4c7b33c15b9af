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

Registration is idempotent (``ready()`` may run more than once in tests), and
this module imports nothing of any other app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

PostUploadHandler = Callable[..., Iterable[int] | None]
MediaResolver = Callable[[str], str | None]

_post_upload: list[PostUploadHandler] = []
_private_media: list[MediaResolver] = []


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
