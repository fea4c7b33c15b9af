"""Private media: only permitted staff get files, and only files the database points at."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import override_settings
from django.urls import resolve

from images import views
from images.models import Image
from images.thumbnails import thumbnails_create
from predictions.models import ExportJob

from .conftest import tiny_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def image(upload):
    batch = upload([("cat.png", tiny_png(1))])
    image = Image.objects.get(batch=batch)
    thumbnails_create(image_ids=[image.pk])
    image.refresh_from_db()
    return image


@pytest.fixture
def staff_without_permission(db, django_user_model):
    return django_user_model.objects.create_user(username="visitor", password="x", is_staff=True)


def url(name: str) -> str:
    return f"/media/{name}"


def test_only_the_media_view_serves_media_url():
    assert resolve("/media/images/ab/cd/anything.jpg").func is views.media_file


def test_anonymous_is_sent_to_the_admin_login(client, image):
    response = client.get(url(image.file.name))
    assert response.status_code == 302
    assert response.url.startswith("/admin/login/?next=/media/images/")


def test_staff_without_view_permission_is_forbidden(client_for, staff_without_permission, image):
    assert client_for(staff_without_permission).get(url(image.file.name)).status_code == 403


@pytest.mark.parametrize("role", ["reviewer", "uploader", "lead"])
def test_roles_that_see_images_get_the_file_and_thumbnail(request, client_for, image, role):
    client = client_for(request.getfixturevalue(role))
    response = client.get(url(image.file.name))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == tiny_png(1)
    assert response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]

    thumbnail = client.get(url(image.thumbnail.name))
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/jpeg"


def test_inactive_staff_is_refused(client_for, reviewer, image):
    client = client_for(reviewer)
    reviewer.is_active = False
    reviewer.save()
    assert client.get(url(image.file.name)).status_code in (302, 403)


@pytest.mark.parametrize(
    "path",
    [
        "images/../../settings.py",
        "images/%2e%2e/%2e%2e/etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "/etc/passwd",
        "images/ab/cd/" + "0" * 64 + ".png",
        "exports/nothing.csv",
        "stray.txt",
    ],
)
def test_traversal_and_unknown_paths_are_not_found(client_for, reviewer, image, path):
    default_storage.save("stray.txt", ContentFile(b"not referenced by any row"))
    response = client_for(reviewer).get("/media/" + path)
    assert response.status_code == 404


def test_only_the_exact_stored_name_is_served(client_for, reviewer, image):
    other_name = image.file.name.replace(".png", ".jpg")
    default_storage.save(other_name, ContentFile(b"same hash, other file"))
    assert client_for(reviewer).get(url(other_name)).status_code == 404


def test_export_files_need_the_export_permission(client_for, reviewer, lead):
    job = ExportJob.objects.create(created_by=lead, status=ExportJob.Status.DONE)
    job.file.save("exports/labels.csv", ContentFile(b"image,label\n"), save=True)

    assert client_for(reviewer).get(url(job.file.name)).status_code == 403
    response = client_for(lead).get(url(job.file.name))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert b"".join(response.streaming_content) == b"image,label\n"


@override_settings(MEDIA_SENDFILE_HEADER="X-Accel-Redirect", MEDIA_SENDFILE_PREFIX="/protected-media/")
def test_front_server_sends_the_file_when_configured(client_for, reviewer, image):
    response = client_for(reviewer).get(url(image.file.name))
    assert response.status_code == 200
    assert response["X-Accel-Redirect"] == f"/protected-media/{image.file.name}"
    assert response.content == b""
    assert "private" in response["Cache-Control"]


def test_only_reads_are_allowed(client_for, reviewer, image):
    assert client_for(reviewer).post(url(image.file.name)).status_code == 405
