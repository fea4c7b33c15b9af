"""Prediction jobs: queueing in chunks, the chunk task, failures and retries.

django-q2 runs in sync mode here (tests/settings.py): a queued task runs when
the on_commit callbacks are executed.
"""

import logging
from types import SimpleNamespace

import pytest

from tests.conftest import DEMO_CLASSES

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_predictor_cache")]


@pytest.fixture
def queued_tasks(monkeypatch):
    """Record async_task calls instead of running them."""
    calls = []

    def record(func, *args, **kwargs):
        calls.append(SimpleNamespace(func=func, args=args, kwargs=kwargs))

    monkeypatch.setattr("predictions.services.jobs.async_task", record)
    return calls


def enqueue_and_run(django_capture_on_commit_callbacks, **kwargs):
    from predictions.services.jobs import enqueue_predictions

    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_predictions(**kwargs)
    if job is not None:
        job.refresh_from_db()
    return job


def test_enqueue_creates_a_job_for_the_images_still_lacking_a_prediction(
    settings, image_factory, prediction_factory, active_model_version, queued_tasks,
    django_capture_on_commit_callbacks,
):
    from predictions.models import PredictionJob
    from predictions.services.jobs import enqueue_predictions

    settings.PREDICTION_CHUNK_SIZE = 2
    images = [image_factory() for _ in range(4)]
    already_predicted = prediction_factory().image

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = enqueue_predictions(
            image_ids=[already_predicted.pk] + [image.pk for image in images], reason="upload"
        )
    assert queued_tasks == [], "chunks are queued only once the transaction commits"
    for callback in callbacks:
        callback()

    assert job.total == 4
    assert job.status == PredictionJob.Status.QUEUED
    assert job.model_version == active_model_version
    assert [call.func for call in queued_tasks] == ["predictions.tasks.predict_chunk"] * 2
    assert [call.args for call in queued_tasks] == [
        (job.pk, [images[0].pk, images[1].pk]),
        (job.pk, [images[2].pk, images[3].pk]),
    ]
    assert queued_tasks[0].kwargs["group"] == queued_tasks[1].kwargs["group"]


def test_a_job_is_split_into_chunks_of_equal_size(
    settings, image_factory, active_model_version, queued_tasks, django_capture_on_commit_callbacks
):
    from predictions.services.jobs import enqueue_predictions

    settings.PREDICTION_CHUNK_SIZE = 4
    images = [image_factory() for _ in range(9)]

    with django_capture_on_commit_callbacks(execute=True):
        enqueue_predictions(image_ids=[image.pk for image in images], reason="upload")

    # Three chunks, as 4 per chunk needs, of 3 each rather than 4 + 4 + 1.
    assert [len(call.args[1]) for call in queued_tasks] == [3, 3, 3]
    assert [pk for call in queued_tasks for pk in call.args[1]] == [image.pk for image in images]


def test_chunk_writes_one_prediction_per_image(image_factory, active_model_version, django_capture_on_commit_callbacks):
    from predictions.models import Prediction, PredictionJob

    images = [image_factory() for _ in range(3)]
    job = enqueue_and_run(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], reason="upload")

    predictions = list(Prediction.objects.filter(job=job).select_related("label"))
    assert sorted(p.image_id for p in predictions) == sorted(i.pk for i in images)
    for prediction in predictions:
        assert prediction.model_version == active_model_version
        assert prediction.label.name in DEMO_CLASSES
        assert len(prediction.probabilities) == len(DEMO_CLASSES)
        assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-4)
        assert prediction.confidence == pytest.approx(max(prediction.probabilities), abs=1e-5)
        assert prediction.label.name == DEMO_CLASSES[prediction.probabilities.index(max(prediction.probabilities))]
        assert 0 <= prediction.margin <= prediction.confidence
        assert prediction.inference_ms > 0
    assert (job.status, job.done, job.failed, job.total) == (PredictionJob.Status.DONE, 3, 0, 3)
    assert job.started_at is not None and job.finished_at is not None


def test_running_the_same_chunk_twice_writes_and_counts_nothing_new(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction
    from predictions.services.chunks import predict_chunk_run

    images = [image_factory() for _ in range(3)]
    ids = [i.pk for i in images]
    job = enqueue_and_run(django_capture_on_commit_callbacks, image_ids=ids, reason="upload")
    rows_before = list(Prediction.objects.order_by("pk").values_list("pk", "image_id", "created_at"))

    result = predict_chunk_run(job_id=job.pk, image_ids=ids)

    job.refresh_from_db()
    assert result["predicted"] == 0
    assert list(Prediction.objects.order_by("pk").values_list("pk", "image_id", "created_at")) == rows_before
    assert (job.done, job.failed, job.total) == (3, 0, 3)


def test_a_corrupt_file_is_recorded_as_a_failure_and_the_rest_of_the_chunk_is_predicted(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionFailure, PredictionJob

    good = [image_factory(), image_factory()]
    corrupt = image_factory(name="holiday.jpg")
    with open(corrupt.file.path, "wb") as stored:
        stored.write(b"\x00 this is not an image at all \x00" * 4)

    job = enqueue_and_run(
        django_capture_on_commit_callbacks, image_ids=[good[0].pk, corrupt.pk, good[1].pk], reason="upload"
    )

    assert set(Prediction.objects.values_list("image_id", flat=True)) == {good[0].pk, good[1].pk}
    failure = PredictionFailure.objects.get()
    assert failure.image == corrupt and failure.model_version == active_model_version and failure.job == job
    assert failure.message.startswith("holiday.jpg: ")
    assert (job.status, job.done, job.failed) == (PredictionJob.Status.DONE, 2, 1)

    # The failure is counted once even when the chunk is delivered again.
    from predictions.services.chunks import predict_chunk_run

    predict_chunk_run(job_id=job.pk, image_ids=[good[0].pk, corrupt.pk, good[1].pk])
    job.refresh_from_db()
    assert (job.done, job.failed) == (2, 1)
    assert PredictionFailure.objects.count() == 1


def test_the_chunk_makes_the_thumbnail_of_each_predicted_image_from_the_same_decode(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from django.core.files.storage import default_storage
    from PIL import Image as PILImage

    lacking = [image_factory(), image_factory()]
    kept = image_factory(thumbnail="thumbnails/ab/cd/made-before.jpg")
    corrupt = image_factory(name="holiday.jpg")
    with open(corrupt.file.path, "wb") as stored:
        stored.write(b"\x00 this is not an image at all \x00" * 4)

    enqueue_and_run(
        django_capture_on_commit_callbacks, image_ids=[i.pk for i in [*lacking, kept, corrupt]], reason="upload"
    )

    for image in lacking:
        image.refresh_from_db()
        assert image.thumbnail.name == f"thumbnails/{image.sha256[:2]}/{image.sha256[2:4]}/{image.sha256}.jpg"
        with default_storage.open(image.thumbnail.name) as fp:
            thumb = PILImage.open(fp)
            assert thumb.format == "JPEG" and thumb.size == (64, 48)  # never enlarged
    kept.refresh_from_db()
    corrupt.refresh_from_db()
    assert kept.thumbnail.name == "thumbnails/ab/cd/made-before.jpg"
    assert corrupt.thumbnail == ""  # the changelist shows its placeholder


def test_a_thumbnail_that_cannot_be_stored_does_not_fail_the_chunk(
    image_factory, active_model_version, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    from predictions.models import Prediction, PredictionJob

    def storage_down(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("predictions.services.chunks.thumbnail_file_save", storage_down)
    images = [image_factory(name="a.jpg"), image_factory(name="b.jpg")]

    with caplog.at_level(logging.ERROR, logger="predictions.services.chunks"):
        job = enqueue_and_run(django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], reason="upload")

    assert (job.status, job.done) == (PredictionJob.Status.DONE, 2)
    assert Prediction.objects.count() == 2
    assert "Could not store the thumbnail" in caplog.text and "a.jpg" in caplog.text


def test_a_chunk_whose_model_cannot_run_queues_its_images_thumbnails(
    image_factory, active_model_version, monkeypatch, queued_tasks
):
    from predictions.services.chunks import predict_chunk_run
    from predictions.services.jobs import enqueue_predictions

    def broken_checkpoint(model_version):
        raise RuntimeError("checkpoint unreadable")

    monkeypatch.setattr("predictions.inference.get_predictor", broken_checkpoint)
    thumbnail_tasks = []
    monkeypatch.setattr("images.thumbnails.async_task", lambda func, *args: thumbnail_tasks.append((func, args)))
    lacking = image_factory()
    has_one = image_factory(thumbnail="thumbnails/ab/cd/made-before.jpg")
    job = enqueue_predictions(image_ids=[lacking.pk, has_one.pk], reason="upload")  # recorded, not run

    with pytest.raises(RuntimeError, match="checkpoint unreadable"):
        predict_chunk_run(job_id=job.pk, image_ids=[lacking.pk, has_one.pk])

    assert thumbnail_tasks == [("images.tasks.make_thumbnails", ([lacking.pk],))]


def test_a_missing_file_is_recorded_as_a_failure(image_factory, active_model_version, django_capture_on_commit_callbacks):
    from predictions.models import PredictionFailure

    image = image_factory(name="gone.jpg")
    image.file.storage.delete(image.file.name)

    job = enqueue_and_run(django_capture_on_commit_callbacks, image_ids=[image.pk], reason="upload")

    assert PredictionFailure.objects.get(image=image).message == "gone.jpg: missing file"
    assert (job.done, job.failed) == (0, 1)


def test_an_image_deleted_before_its_chunk_runs_is_taken_off_the_total(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import PredictionJob
    from predictions.services.jobs import enqueue_predictions

    kept, deleted = image_factory(), image_factory()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = enqueue_predictions(image_ids=[kept.pk, deleted.pk], reason="upload")
    deleted.delete()
    for callback in callbacks:
        callback()

    job.refresh_from_db()
    assert (job.status, job.total, job.done) == (PredictionJob.Status.DONE, 1, 1)


def test_a_job_finishes_when_another_job_predicted_its_images_first(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    """An upload and an activation may queue the same image; both jobs reach done."""
    from predictions.models import Prediction, PredictionJob
    from predictions.services.jobs import enqueue_predictions

    images = [image_factory(), image_factory()]
    with django_capture_on_commit_callbacks(execute=False) as upload_callbacks:
        upload_job = enqueue_predictions(image_ids=[i.pk for i in images], reason="upload")
    activation_job = enqueue_and_run(
        django_capture_on_commit_callbacks, image_ids=[i.pk for i in images], reason="activation"
    )
    for callback in upload_callbacks:
        callback()

    upload_job.refresh_from_db()
    assert Prediction.objects.count() == 2
    assert set(Prediction.objects.values_list("job", flat=True)) == {activation_job.pk}
    assert (upload_job.status, upload_job.done, upload_job.total) == (PredictionJob.Status.DONE, 2, 2)
    assert (activation_job.status, activation_job.done) == (PredictionJob.Status.DONE, 2)


def test_nothing_is_queued_without_an_active_validated_model(image_factory, model_version_factory, caplog, queued_tasks):
    from predictions.models import ModelVersion, PredictionJob
    from predictions.services.jobs import enqueue_predictions

    image = image_factory()
    pending = model_version_factory("pending", active=True)
    ModelVersion.objects.filter(pk=pending.pk).update(validation_status=ModelVersion.Validation.PENDING)

    with caplog.at_level(logging.WARNING, logger="predictions.services.jobs"):
        assert enqueue_predictions(image_ids=[image.pk], reason="upload") is None
    ModelVersion.objects.update(is_active=False)
    with caplog.at_level(logging.WARNING, logger="predictions.services.jobs"):
        assert enqueue_predictions(image_ids=[image.pk], reason="upload") is None

    assert not PredictionJob.objects.exists()
    assert queued_tasks == []
    assert "no active validated model version" in caplog.text


def test_retry_failed_requeues_the_failed_images(
    image_factory, active_model_version, django_capture_on_commit_callbacks, make_image
):
    from predictions.models import Prediction, PredictionFailure
    from predictions.services.jobs import retry_failed_predictions

    image = image_factory(name="flaky.jpg")
    good_bytes = open(image.file.path, "rb").read()
    with open(image.file.path, "wb") as stored:
        stored.write(b"garbage")
    first = enqueue_and_run(django_capture_on_commit_callbacks, image_ids=[image.pk], reason="upload")
    assert PredictionFailure.objects.filter(image=image).exists()

    with open(image.file.path, "wb") as stored:
        stored.write(good_bytes)
    with django_capture_on_commit_callbacks(execute=True):
        retry = retry_failed_predictions(image_ids=[image.pk])

    retry.refresh_from_db()
    assert retry.pk != first.pk and retry.reason == "retry"
    assert (retry.total, retry.done, retry.failed) == (1, 1, 0)
    assert not PredictionFailure.objects.exists()
    assert Prediction.objects.get(image=image).job == retry
    # Nothing left to retry: no new job.
    assert retry_failed_predictions() is None


def test_predict_missing_queues_only_images_without_a_prediction_or_failure(
    image_factory, prediction_factory, model_version_factory, queued_tasks, django_capture_on_commit_callbacks
):
    from predictions.models import PredictionFailure
    from predictions.services.jobs import predict_missing

    version = model_version_factory("v2", active=False)
    prediction_factory(model_version=version)
    failed_with_v2 = image_factory()
    PredictionFailure.objects.create(image=failed_with_v2, model_version=version, message="x.jpg: broken")
    missing = [image_factory(), image_factory()]

    with django_capture_on_commit_callbacks(execute=True):
        job = predict_missing(model_version=version, reason="activation")

    assert (job.total, job.model_version, job.reason) == (2, version, "activation")
    assert [call.args for call in queued_tasks] == [(job.pk, [missing[0].pk, missing[1].pk])]


def test_the_predictor_is_loaded_once_per_version(model_version_factory):
    from predictions.inference import get_predictor, load_count

    first = model_version_factory("v1")
    before = load_count()
    predictor = get_predictor(first)
    assert get_predictor(first) is predictor
    assert load_count() == before + 1
    assert list(predictor.class_names) == DEMO_CLASSES

    second = model_version_factory("v2")
    assert get_predictor(second) is not predictor
    assert load_count() == before + 2


# --- admin ----------------------------------------------------------------------------


def test_job_changelist_shows_progress_with_a_bounded_number_of_queries(
    client_for, lead, active_model_version, django_assert_max_num_queries
):
    from django.urls import reverse

    from predictions.models import PredictionJob

    client = client_for(lead)
    url = reverse("admin:predictions_predictionjob_changelist")
    PredictionJob.objects.create(model_version=active_model_version, reason="upload", total=64, done=35, failed=2)
    client.get(url)  # warm the session and content types
    with django_assert_max_num_queries(20) as one_job:
        response = client.get(url)
    assert response.status_code == 200
    assert "35 / 64 (2 failed)" in response.content.decode()

    for _ in range(10):
        PredictionJob.objects.create(model_version=active_model_version, reason="upload", total=3, done=1)
    with django_assert_max_num_queries(len(one_job.captured_queries)):
        assert client.get(url).status_code == 200


def test_pipeline_records_are_read_only_in_the_admin(client_for, lead, prediction_factory):
    from django.urls import reverse

    prediction = prediction_factory()
    client = client_for(lead)
    assert client.get(reverse("admin:predictions_prediction_add")).status_code == 403
    assert client.get(reverse("admin:predictions_predictionjob_add")).status_code == 403
    response = client.post(
        reverse("admin:predictions_prediction_change", args=[prediction.pk]), {"confidence": "0.99"}
    )
    assert response.status_code == 403
    prediction.refresh_from_db()
    assert prediction.confidence == 0.6


def test_prediction_changelist_searches_by_image_name_and_sha(client_for, reviewer, prediction_factory):
    from django.urls import reverse

    wanted = prediction_factory(name="needle.jpg")
    prediction_factory(name="hay.jpg")
    client = client_for(reviewer)
    url = reverse("admin:predictions_prediction_changelist")

    by_name = client.get(url, {"q": "needle"})
    by_sha = client.get(url, {"q": wanted.image.sha256})
    assert [p.pk for p in by_name.context["cl"].result_list] == [wanted.pk]
    assert [p.pk for p in by_sha.context["cl"].result_list] == [wanted.pk]


def test_a_lead_retries_failed_images_from_the_failure_changelist(
    client_for, lead, uploader, image_factory, active_model_version, queued_tasks, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from predictions.models import PredictionFailure, PredictionJob

    image = image_factory()
    failure = PredictionFailure.objects.create(image=image, model_version=active_model_version, message="a.jpg: broken")
    url = reverse("admin:predictions_predictionfailure_changelist")
    data = {"action": "retry_selected_failures", "_selected_action": [failure.pk]}

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(lead).post(url, data, follow=True)

    assert "Queued 1 image again." in response.content.decode()
    assert not PredictionFailure.objects.exists()
    assert PredictionJob.objects.get().reason == "retry"
    assert [call.args[1] for call in queued_tasks] == [[image.pk]]
    # An uploader sees jobs but cannot queue work from them.
    response = client_for(uploader).get(reverse("admin:predictions_predictionjob_changelist"))
    assert response.status_code == 200
    assert "retry_failed_images_of_jobs" not in response.content.decode()
