"""django-q2 entry points of the images app. Thin: take ids, call a service."""

from .services import thumbnails_create


def make_thumbnails(image_ids: list[int]) -> int:
    return thumbnails_create(image_ids=image_ids)
