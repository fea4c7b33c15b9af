"""Private media on the object store (MEDIA_STORAGE=s3): permission check, then a short-lived signed URL.

The store is moto's in-process mock of S3; tests/integration/test_s3_storage.py
runs the same path against moto's real server with a live web server and cluster.
"""

import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from images.models import Image
from images.thumbnails import thumbnails_create
from predictions.models import ExportJob
from tests.object_store import s3_bucket, s3_media  # noqa: F401

from .conftest import tiny_png

pytestmark = pytest.mark.django_db

PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers", "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")


@pytest.fixture
def image(s3_media, upload):
    batch = upload([("cat.png", tiny_png(1))])
    image = Image.objects.get(batch=batch)
    thumbnails_create(image_ids=[image.pk])
    image.refresh_from_db()
    return image


def media(name: str) -> str:
    return f"/media/{name}"


def test_uploads_and_thumbnails_land_in_the_bucket_private_and_with_their_hash(s3_media, image):
    assert s3_media.keys() == sorted([f"media/{image.file.name}", f"media/{image.thumbnail.name}"])
    for key in s3_media.keys():
        grants = s3_media.client.get_object_acl(Bucket=s3_media.name, Key=key)["Grants"]
        assert not [g for g in grants if g["Grantee"].get("URI") in PUBLIC_GROUPS], f"{key} is readable by others"
    head = s3_media.client.head_object(Bucket=s3_media.name, Key=f"media/{image.file.name}")
    assert head["Metadata"]["sha256"] == image.sha256 == hashlib.sha256(tiny_png(1)).hexdigest()
    # Pages link to the media view, never to the store.
    assert image.file.url == media(image.file.name)
    assert image.thumbnail.url == media(image.thumbnail.name)


@pytest.mark.parametrize("role", ["reviewer", "uploader", "lead"])
def test_permitted_staff_are_redirected_to_a_signed_url_that_expires_in_a_minute(request, client_for, image, role):
    response = client_for(request.getfixturevalue(role)).get(media(image.file.name))
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    query = parse_qs(target.query)
    assert target.path.endswith(f"/media/{image.file.name}")
    assert query["X-Amz-Expires"] == ["60"] and query["X-Amz-Signature"]
    assert "private" in response["Cache-Control"] and "max-age=30" in response["Cache-Control"]
    assert requests.get(response["Location"], timeout=10).content == tiny_png(1)

    thumbnail = client_for(request.getfixturevalue(role)).get(media(image.thumbnail.name))
    assert thumbnail.status_code == 302 and "X-Amz-Signature=" in thumbnail["Location"]


def test_anonymous_and_unprivileged_users_never_get_a_store_url(client, client_for, django_user_model, image):
    anonymous = client.get(media(image.file.name))
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")
    visitor = django_user_model.objects.create_user(username="visitor", password="x", is_staff=True)
    assert client_for(visitor).get(media(image.file.name)).status_code == 403


def test_an_unsigned_request_to_the_store_is_refused(s3_media, image):
    unsigned = f"https://{s3_media.name}.s3.amazonaws.com/media/{image.file.name}"
    assert requests.get(unsigned, timeout=10).status_code == 403


def test_an_export_is_a_signed_download_for_those_who_may_export(s3_media, client_for, reviewer, lead):
    job = ExportJob.objects.create(created_by=lead, status=ExportJob.Status.DONE)
    job.file.save("exports/labels.csv", ContentFile(b"image,label\n"), save=True)
    assert f"media/{job.file.name}" in s3_media.keys()

    assert client_for(reviewer).get(media(job.file.name)).status_code == 403
    response = client_for(lead).get(media(job.file.name))
    assert response.status_code == 302
    assert "no-store" in response["Cache-Control"]
    download = requests.get(response["Location"], timeout=10)
    assert download.content == b"image,label\n"
    assert download.headers["Content-Disposition"] == 'attachment; filename="labels.csv"'


def test_unknown_names_are_not_found_before_any_url_is_signed(s3_media, client_for, reviewer, image):
    default_storage.save("stray.txt", ContentFile(b"not referenced by any row"))
    assert client_for(reviewer).get(media("stray.txt")).status_code == 404
    assert client_for(reviewer).get(media("images/../stray.txt")).status_code == 404


def test_streamed_through_django_when_redirects_are_off(settings, client_for, reviewer, image):
    settings.S3_MEDIA_REDIRECT = False
    response = client_for(reviewer).get(media(image.file.name))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == tiny_png(1)


def test_a_second_file_under_a_taken_name_gets_a_name_of_its_own(s3_media):
    first = default_storage.save("exports/labels.csv", ContentFile(b"first"))
    second = default_storage.save("exports/labels.csv", ContentFile(b"second"))
    assert first == "exports/labels.csv" and second != first
    assert default_storage.open(first).read() == b"first"
