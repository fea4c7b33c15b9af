"""django-q2 entry points of the images app. Thin: take ids, call a service.

The dotted names are what the broker holds (``images.tasks.make_thumbnails``):
they do not change when the code behind them moves.
"""

from .thumbnails import thumbnails_create


def make_thumbnails(image_ids: list[int]) -> int:
    """Make the missing thumbnails of these images (queued by images.thumbnails.thumbnails_queue)."""
    return thumbnails_create(image_ids=image_ids)
