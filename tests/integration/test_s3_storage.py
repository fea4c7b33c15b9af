"""Media, thumbnails, exports and checkpoints on a real S3 server (moto's), across real processes.

A gunicorn web server and a two-worker qcluster all run with ``MEDIA_STORAGE=s3``
against moto's standalone server (tests/integration/s3.py). Through the admin over
HTTP a Lead registers a checkpoint and an Uploader uploads images; the cluster
validates the checkpoint and predicts the images reading both from the bucket,
with the checkpoint downloaded once into the machine's cache; thumbnails and an
export land in the bucket. Then nobody without permission gets at any object: not
through the media view, not by an unsigned request to the store.

With the scale-out services (``make test`` with TEST_DATABASE_URL and
TEST_REDIS_URL) a second cluster joins, with a checkpoint cache of its own as on
another machine: web, two clusters, PostgreSQL, Redis and S3 together, the
layout of the README's production example.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings
from django.db import connection

from tests.conftest import DEMO_CLASSES
from tests.integration.conftest import admin_session, descendants, gunicorn_start, tiny_jpeg, wait_for
from tests.integration.s3 import s3_server  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

IMAGE_COUNT = 6
CLUSTER_COUNT = 2 if connection.vendor == "postgresql" and "redis" in settings.Q_CLUSTER else 1
TIMEOUT_SECONDS = 120
HTTP_TIMEOUT = 60


def csrf_headers(session: requests.Session) -> dict[str, str]:
    return {"X-CSRFToken": session.cookies["csrftoken"]}


@pytest.fixture
def s3_environment(s3_server, cluster_name, tmp_path) -> dict[str, str]:
    return {
        **s3_server.environment(),
        "Q_CLUSTER_NAME": cluster_name,
        "PREDICTION_CHUNK_SIZE": "2",  # several chunks, so several workers load the model
        # A folder of the processes' own: nothing may land on this machine's disk (the
        # suite's shared media folder holds other tests' files with the same content).
        "MEDIA_ROOT": str(tmp_path / "local-media"),
    }


@pytest.fixture
def web(s3_environment, transactional_db, tmp_path):
    server = gunicorn_start(log_path=tmp_path / "gunicorn.log", environment=s3_environment)
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def clusters(start_qcluster, s3_environment, tmp_path):
    """A cluster of two workers; with the scale-out services, a second one as if on another machine.

    Each cluster has a checkpoint cache of its own (a machine's disk). Two clusters
    share a queue only on PostgreSQL with Redis (see test_scale_out.py).
    """
    started = []
    for number in range(1, CLUSTER_COUNT + 1):
        cache = {"CHECKPOINT_CACHE_DIR": str(tmp_path / f"machine-{number}" / "checkpoint-cache")}
        workers = "2" if number == 1 else "1"
        started.append(start_qcluster(**s3_environment, **cache, Q_WORKERS=workers, Q_QUEUE_LIMIT="4"))
    for cluster in started:
        cluster.wait_until_running()
    return started


def test_upload_predict_thumbnail_and_export_on_the_object_store_and_nothing_leaks(
    s3_server, web, clusters, lead, uploader, reviewer, django_user_model, tiny_checkpoint_bytes, settings, tmp_path
):
    from django_q.models import Task

    from images.models import Image, UploadBatch
    from predictions.models import ExportJob, ModelVersion, Prediction, PredictionJob
    from predictions.services.exports import labels_csv_export_start
    from predictions.services.model_versions import model_version_activate

    # --- a Lead registers a checkpoint through the admin; the cluster validates it from the bucket
    lead_session = admin_session(web, lead)
    response = lead_session.post(
        f"{web.url}/admin/predictions/modelversion/add/",
        data={"name": "s3-v1", "csrfmiddlewaretoken": lead_session.cookies["csrftoken"]},
        files={"checkpoint_upload": ("tiny.pth", tiny_checkpoint_bytes, "application/octet-stream")},
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 302, response.text[-3000:]
    version = ModelVersion.objects.get(name="s3-v1")

    def validated():
        """the cluster to validate the checkpoint"""
        version.refresh_from_db()
        return version.validation_status != ModelVersion.Validation.PENDING

    wait_for(validated, timeout=TIMEOUT_SECONDS, cluster=clusters[0])
    assert version.validation_status == ModelVersion.Validation.VALID, version.validation_error
    assert version.class_names == DEMO_CLASSES  # read from the checkpoint in the bucket
    checkpoint_key = f"weights/{version.checkpoint.name}"
    assert s3_server.keys("weights/") == [checkpoint_key]
    model_version_activate(version=version, user=lead, predict_missing=False)

    # --- an Uploader uploads through the admin; the cluster predicts reading the images from the bucket
    uploader_session = admin_session(web, uploader)
    response = uploader_session.post(
        f"{web.url}/admin/images/image/upload/",
        data={"name": "on s3"},
        files=[("files", (f"photo-{n}.jpg", tiny_jpeg(n), "image/jpeg")) for n in range(IMAGE_COUNT)],
        headers=csrf_headers(uploader_session),
        allow_redirects=False,
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 302, response.text[-3000:]
    batch = UploadBatch.objects.get(name="on s3")

    def predicted():
        """the upload's prediction job to finish"""
        done = [PredictionJob.Status.DONE, PredictionJob.Status.FAILED]
        jobs = PredictionJob.objects.filter(batch=batch)
        return jobs.exists() and not jobs.exclude(status__in=done).exists()

    wait_for(predicted, timeout=TIMEOUT_SECONDS, cluster=clusters[0])
    jobs = list(PredictionJob.objects.filter(batch=batch))
    assert all(job.status == PredictionJob.Status.DONE for job in jobs), [job.error for job in jobs]
    images = list(Image.objects.filter(batch=batch))
    assert len(images) == IMAGE_COUNT
    assert Prediction.objects.filter(image__batch=batch, model_version=version).count() == IMAGE_COUNT
    assert all(image.thumbnail for image in images), "the worker makes the thumbnails from its decode"

    # Files are in the bucket, private, with their hash; none on this machine's disk.
    assert s3_server.keys("media/images/") == sorted(f"media/{image.file.name}" for image in images)
    assert s3_server.keys("media/thumbnails/") == sorted(f"media/{image.thumbnail.name}" for image in images)
    local_media = tmp_path / "local-media"
    assert not local_media.exists() or not any(path.is_file() for path in local_media.rglob("*"))

    # The checkpoint was downloaded once per machine (cluster), however many of its workers loaded it.
    chunk_workers = {
        task.result["worker"]["pid"] for task in Task.objects.filter(func="predictions.tasks.predict_chunk", success=True)
    }
    for number, cluster in enumerate(clusters, start=1):
        loaded = len(chunk_workers & set(descendants(cluster.pid)))
        log = cluster.log()
        assert len(re.findall(r"Loaded model version", log)) == loaded, cluster.log_tail()
        assert len(re.findall(r"copied from the object store", log)) == min(loaded, 1), cluster.log_tail()
        cached = sorted(path.name for path in (tmp_path / f"machine-{number}" / "checkpoint-cache").glob("*.pth"))
        assert cached == [f"{hashlib.sha256(tiny_checkpoint_bytes).hexdigest()}.pth"][:loaded]

    # --- an export, written by the cluster into the bucket, downloaded through a signed URL
    export = labels_csv_export_start(image_ids=[image.pk for image in images], user=lead)

    def exported():
        """the export to finish"""
        export.refresh_from_db()
        return export.status in (ExportJob.Status.DONE, ExportJob.Status.FAILED)

    wait_for(exported, timeout=TIMEOUT_SECONDS, cluster=clusters[0])
    assert export.status == ExportJob.Status.DONE, export.error
    assert f"media/{export.file.name}" in s3_server.keys("media/exports/")
    response = lead_session.get(f"{web.url}/media/{export.file.name}", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert response.status_code == 302
    signed = response.headers["Location"]
    assert signed.startswith(f"{s3_server.endpoint}/{s3_server.bucket}/media/exports/")
    assert parse_qs(urlsplit(signed).query)["X-Amz-Expires"] == ["60"]
    download = requests.get(signed, timeout=HTTP_TIMEOUT)
    assert download.status_code == 200 and download.headers["Content-Disposition"].startswith("attachment")
    assert all(image.original_name in download.text for image in images)

    # --- nobody without permission reaches any object
    visitor = django_user_model.objects.create_user(username="visitor", password="pw-for-tests-only", is_staff=True)
    sessions = {"anonymous": requests.Session(), "visitor": admin_session(web, visitor)}
    names = [image.file.name for image in images] + [image.thumbnail.name for image in images] + [export.file.name]
    for who, session in sessions.items():
        for name in names:
            response = session.get(f"{web.url}/media/{name}", allow_redirects=False, timeout=HTTP_TIMEOUT)
            expected = (302, "/admin/login/") if who == "anonymous" else (403, None)
            assert response.status_code == expected[0], f"{who} got {name}: {response.status_code}"
            if expected[1]:
                assert response.headers["Location"].startswith(expected[1])
    reviewer_session = admin_session(web, reviewer)
    refused = reviewer_session.get(f"{web.url}/media/{export.file.name}", allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert refused.status_code == 403, "a reviewer may see images, not download exports"

    every_key = s3_server.keys()
    assert checkpoint_key in every_key and len(every_key) == 2 * IMAGE_COUNT + 2
    for key in every_key:
        assert not s3_server.public_grants(key), f"{key} is readable by others"
        unsigned = requests.get(f"{s3_server.endpoint}/{s3_server.bucket}/{key}", timeout=HTTP_TIMEOUT)
        assert unsigned.status_code == 403, f"an unsigned GET of {key} answered {unsigned.status_code}"

    # Pages link to the media view, never to the store.
    page = reviewer_session.get(f"{web.url}/admin/images/image/", timeout=HTTP_TIMEOUT)
    assert page.status_code == 200
    assert "/media/thumbnails/" in page.text and s3_server.endpoint not in page.text
