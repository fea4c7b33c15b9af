"""Embeddings stored with predictions: by the worker, by the JSON endpoint, and filled in later.

The worker runs the tiny real checkpoint (django-q2's sync mode, tests/settings.py),
so the embeddings are the model's own 512 pooled ResNet18 features.
"""

import numpy as np
import pytest

from predictions.services.chunk_record import ChunkOutcome, ChunkPlan, chunk_plan

pytestmark = [pytest.mark.usefixtures("fresh_predictor_cache")]

RESNET18_FEATURES = 512


def run_job(django_capture_on_commit_callbacks, start):
    with django_capture_on_commit_callbacks(execute=True):
        job = start()
    if job is not None:
        job.refresh_from_db()
    return job


def predict(django_capture_on_commit_callbacks, images):
    from predictions.services.jobs import enqueue_predictions

    return run_job(
        django_capture_on_commit_callbacks,
        lambda: enqueue_predictions(image_ids=[image.pk for image in images], reason="upload"),
    )


def fill(django_capture_on_commit_callbacks, version):
    from predictions.services.jobs import embeddings_fill

    return run_job(django_capture_on_commit_callbacks, lambda: embeddings_fill(model_version=version))


# --- the plan (pure) ---------------------------------------------------------------


def test_an_embeddings_job_plans_existing_rows_as_embed_and_counts_as_a_prediction_would():
    result = chunk_plan(
        job_id=7,
        image_ids=[1, 2, 3, 4],
        existing_ids={1, 2, 3, 4},
        prior_predictions={3: None},  # 3 has its embedding already (from the endpoint, say)
        prior_failures={},
        lacking_embedding={1, 2},  # 4 has no prediction at all: a whole row
        outcome=ChunkOutcome(predictions={1: object(), 2: object(), 4: object()}),
    )
    assert result == ChunkPlan(predict=[4], embed=[1, 2], fail={}, done=4, failed=0, vanished=0)


def test_a_redelivered_embeddings_chunk_counts_nothing():
    result = chunk_plan(
        job_id=7,
        image_ids=[1, 2],
        existing_ids={1, 2},
        prior_predictions={1: 7},  # embedded by this job's earlier delivery
        prior_failures={},
        lacking_embedding={2},
        outcome=ChunkOutcome(predictions={2: object()}),
    )
    assert (result.embed, result.done) == ([2], 1)


# --- the worker and the endpoint ---------------------------------------------------------


@pytest.mark.django_db
def test_the_worker_stores_each_images_embedding_from_the_same_pass(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from ml.features import embedding_from_bytes
    from predictions.models import Prediction

    images = [image_factory() for _ in range(3)]
    predict(django_capture_on_commit_callbacks, images)

    rows = list(Prediction.objects.filter(model_version=active_model_version))
    assert len(rows) == 3
    for row in rows:
        vector = embedding_from_bytes(bytes(row.embedding))
        assert vector.shape == (RESNET18_FEATURES,)
        assert np.isfinite(vector).all() and np.abs(vector).sum() > 0


@pytest.mark.django_db
def test_with_store_embeddings_off_the_rows_have_none(
    settings, image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction

    settings.STORE_EMBEDDINGS = False
    predict(django_capture_on_commit_callbacks, [image_factory() for _ in range(2)])

    assert list(Prediction.objects.values_list("embedding", flat=True)) == [None, None]


@pytest.mark.django_db
def test_rows_built_for_the_endpoint_carry_the_embedding(stub_model_version_factory, image_factory):
    from ml.features import embedding_from_bytes
    from ml.predictor import Prediction as Result
    from predictions.services.prediction_rows import prediction_rows_build

    version = stub_model_version_factory()
    image = image_factory()
    vector = np.arange(8, dtype=np.float16)
    result = Result(label="circle", index=0, confidence=0.9, probabilities=(0.9, 0.05, 0.03, 0.01, 0.01),
                    embedding=vector)  # fmt: skip
    without = Result(label="circle", index=0, confidence=0.9, probabilities=(0.9, 0.05, 0.03, 0.01, 0.01))

    rows = prediction_rows_build(model_version=version, results={image.pk: result}, inference_ms=1.0)
    assert np.array_equal(embedding_from_bytes(rows[0].embedding), vector)
    rows = prediction_rows_build(model_version=version, results={image.pk: without}, inference_ms=1.0)
    assert rows[0].embedding is None


# --- filling the missing ones -------------------------------------------------------------


@pytest.mark.django_db
def test_filling_writes_only_the_missing_embeddings_and_keeps_what_reviewers_saw(
    settings, image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionJob

    settings.PREDICTION_CHUNK_SIZE = 2
    images = [image_factory() for _ in range(5)]
    predict(django_capture_on_commit_callbacks, images)
    kept = Prediction.objects.get(image=images[0])
    # Three rows from before embeddings were stored, with a label that is not the model's own now.
    Prediction.objects.filter(image__in=images[2:]).update(embedding=None, confidence=0.123)

    job = fill(django_capture_on_commit_callbacks, active_model_version)

    assert (job.reason, job.status, job.total, job.done, job.failed) == (
        "embeddings", PredictionJob.Status.DONE, 3, 3, 0,
    )
    rows = {row.image_id: row for row in Prediction.objects.all()}
    assert all(row.embedding is not None for row in rows.values())
    assert [rows[image.pk].confidence for image in images[2:]] == [0.123] * 3, "only the embedding is written"
    assert {rows[image.pk].job_id for image in images[2:]} == {job.pk}
    assert bytes(rows[kept.image_id].embedding) == bytes(kept.embedding) and rows[kept.image_id].job_id == kept.job_id
    assert fill(django_capture_on_commit_callbacks, active_model_version) is None, "nothing left to fill"


@pytest.mark.django_db
def test_a_redelivered_fill_chunk_writes_and_counts_nothing_new(
    image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction
    from predictions.services.chunks import predict_chunk_run

    images = [image_factory() for _ in range(2)]
    predict(django_capture_on_commit_callbacks, images)
    Prediction.objects.update(embedding=None)
    job = fill(django_capture_on_commit_callbacks, active_model_version)
    embeddings = dict(Prediction.objects.values_list("image_id", "embedding"))

    result = predict_chunk_run(job_id=job.pk, image_ids=[image.pk for image in images])

    job.refresh_from_db()
    assert (result["embedded"], result["predicted"]) == (0, 0)
    assert (job.done, job.failed, job.total) == (2, 0, 2)
    assert dict(Prediction.objects.values_list("image_id", "embedding")) == embeddings


@pytest.mark.django_db
def test_a_fill_job_whose_model_gives_no_embeddings_fails_with_the_reason(
    settings, image_factory, active_model_version, django_capture_on_commit_callbacks
):
    from predictions.models import Prediction, PredictionJob
    from predictions.services.chunks import predict_chunk_run

    predict(django_capture_on_commit_callbacks, [image_factory()])
    Prediction.objects.update(embedding=None)
    job = PredictionJob.objects.create(model_version=active_model_version, reason="embeddings", total=1)
    settings.STORE_EMBEDDINGS = False

    with pytest.raises(RuntimeError, match="gives no embeddings: STORE_EMBEDDINGS is off"):
        predict_chunk_run(job_id=job.pk, image_ids=list(Prediction.objects.values_list("image_id", flat=True)))


@pytest.mark.django_db
def test_the_sweep_requeues_the_images_a_stalled_fill_job_left_without_embedding(
    prediction_factory, stub_model_version_factory, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from predictions.models import PredictionJob
    from predictions.services import sweep

    version = stub_model_version_factory()
    with_embedding = prediction_factory(model_version=version)
    with_embedding.embedding = b"\x00\x00" * 4
    with_embedding.save()
    lacking = prediction_factory(model_version=version)
    job = PredictionJob.objects.create(
        model_version=version, reason="embeddings", total=2, progressed_at=timezone.now() - timedelta(hours=1)
    )
    queued = []
    monkeypatch.setattr(sweep, "_queued_task_count", lambda: 0)
    monkeypatch.setattr(sweep, "chunks_queue_on_commit", lambda *, job, image_ids, label: queued.append(image_ids))

    summary = sweep.predictions_sweep(stale_after=timedelta(minutes=1))

    assert summary["requeued_images"] == 1 and queued == [[lacking.image_id]]
    job.refresh_from_db()
    assert job.status == PredictionJob.Status.QUEUED


@pytest.mark.django_db
def test_the_admin_action_queues_a_fill_job(lead, client_for, prediction_factory, stub_model_version_factory,
                                            monkeypatch):  # fmt: skip
    from predictions.models import PredictionJob

    queued = []
    monkeypatch.setattr("predictions.services.jobs.async_task", lambda *args, **kwargs: queued.append(args))
    version = stub_model_version_factory()
    prediction_factory(model_version=version)

    response = client_for(lead).post(
        "/admin/predictions/modelversion/",
        {"action": "fill_missing_embeddings", "_selected_action": [version.pk]},
        follow=True,
    )

    job = PredictionJob.objects.get(reason="embeddings")
    assert (job.model_version, job.total) == (version, 1)
    assert "queued" in response.content.decode()
