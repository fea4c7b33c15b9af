"""An in-process S3 (moto's mock) behind the "default" storage, for unit tests of MEDIA_STORAGE=s3.

Import the fixture into a test module (``from tests.object_store import s3_media  # noqa: F401``).
The integration tests use moto's real server instead (tests/integration/s3.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

BUCKET = "reviewtool-unit"
REGION = "us-east-1"


@dataclass
class Bucket:
    client: object  # a boto3 S3 client on the mocked store
    name: str

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", ()))


def s3_storage(location: str):
    """A PrivateS3Storage on the mocked bucket, configured as the settings of MEDIA_STORAGE=s3 do."""
    from reviewtool.object_storage import PrivateS3Storage

    return PrivateS3Storage(bucket_name=BUCKET, region_name=REGION, location=location, querystring_expire=60)


@pytest.fixture
def s3_bucket(monkeypatch):
    """An empty private bucket on moto's in-process mock of S3 (boto3 never leaves the process)."""
    pytest.importorskip("moto", reason="moto is a development requirement (requirements-dev.txt)")
    import boto3
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield Bucket(client=client, name=BUCKET)


@pytest.fixture
def s3_media(settings, s3_bucket) -> Bucket:
    """The "default" storage (images, thumbnails, exports) on the mocked bucket, as with MEDIA_STORAGE=s3."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "reviewtool.object_storage.PrivateS3Storage",
            "OPTIONS": {"bucket_name": BUCKET, "region_name": REGION, "location": "media", "querystring_expire": 60},
        },
    }
    settings.MEDIA_STORAGE = "s3"
    settings.S3_URL_SECONDS = 60
    settings.S3_MEDIA_REDIRECT = True
    return s3_bucket
