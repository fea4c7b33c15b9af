"""images.hooks: the predictions app plugs in by registering, and images works without it."""

from unittest import mock

import pytest

from images import hooks
from images.models import Image

pytestmark = pytest.mark.django_db


def test_the_predictions_app_registers_its_handlers_once_at_startup():
    from predictions.selectors.images import export_file_kind
    from predictions.services.jobs import upload_predictions_enqueue

    assert hooks._post_upload.count(upload_predictions_enqueue) == 1
    assert hooks._private_media.count(export_file_kind) == 1
    hooks.post_upload_register(upload_predictions_enqueue)  # ready() running again
    assert hooks._post_upload.count(upload_predictions_enqueue) == 1


def test_without_a_post_upload_handler_every_new_image_is_thumbnailed_on_its_own(
    upload, make_image, django_capture_on_commit_callbacks
):
    with mock.patch.object(hooks, "_post_upload", []), mock.patch("images.thumbnails.async_task") as async_task:
        with django_capture_on_commit_callbacks(execute=True):
            upload([("a.jpg", make_image(seed=1)), ("b.jpg", make_image(seed=2))])

    ids = sorted(Image.objects.values_list("pk", flat=True))
    async_task.assert_called_once_with("images.tasks.make_thumbnails", ids)


def test_images_a_handler_takes_are_not_thumbnailed_twice(upload, make_image, django_capture_on_commit_callbacks):
    calls = []

    def takes_the_first(*, image_ids, batch, user):
        calls.append((image_ids, batch.pk))
        return image_ids[:1]

    with mock.patch.object(hooks, "_post_upload", [takes_the_first]), mock.patch(
        "images.thumbnails.async_task"
    ) as async_task:
        with django_capture_on_commit_callbacks(execute=True):
            batch = upload([("a.jpg", make_image(seed=1)), ("b.jpg", make_image(seed=2))])

    first, second = Image.objects.order_by("pk").values_list("pk", flat=True)
    assert calls == [([first, second], batch.pk)]
    async_task.assert_called_once_with("images.tasks.make_thumbnails", [second])
