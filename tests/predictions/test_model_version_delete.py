"""Deleting model versions: never the active one; counts first; reviews stay; checkpoint
files of deleted and rejected versions are removed; a chunk of a deleted version ends quietly."""

import os

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.urls import reverse

from images.models import Image
from predictions.models import Label, ModelVersion, Prediction, PredictionFailure, PredictionJob, Review
from predictions.services.model_versions import model_version_delete, model_version_register
from predictions.services.reviews import review_submit


@pytest.fixture
def versions(stub_model_version_factory, prediction_factory, reviewer):
    """The active version, and an old one with two predictions (one reviewed), a failure and a job."""
    old = stub_model_version_factory("old", active=False)
    active = stub_model_version_factory("current", active=True)
    first = prediction_factory(model_version=old, label="circle")
    prediction_factory(model_version=old)
    review_submit(image=first.image, reviewer=reviewer, label=Label.objects.get(name="star"), prediction=first)
    PredictionFailure.objects.create(image=first.image, model_version=old, message="broken")
    PredictionJob.objects.create(model_version=old, total=2)
    return {"old": old, "active": active, "reviewed_image": first.image}


def checkpoint_exists(version: ModelVersion) -> bool:
    return version.checkpoint.storage.exists(version.checkpoint.name)


# --- the service --------------------------------------------------------------------


def test_the_active_version_is_refused(versions, lead):
    with pytest.raises(ValidationError, match="active version and cannot be deleted; activate another"):
        model_version_delete(version=versions["active"], user=lead)
    assert ModelVersion.objects.filter(pk=versions["active"].pk).exists()


def test_deleting_keeps_the_reviews_and_removes_the_checkpoint_on_commit(
    versions, lead, django_capture_on_commit_callbacks
):
    old = versions["old"]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        model_version_delete(version=old, user=lead)
    assert checkpoint_exists(old)  # not before the commit
    for callback in callbacks:
        callback()

    assert not ModelVersion.objects.filter(pk=old.pk).exists()
    assert not Prediction.objects.filter(model_version_id=old.pk).exists()
    assert not PredictionFailure.objects.exists() and not PredictionJob.objects.exists()
    review = Review.objects.get()
    assert review.prediction is None and review.label.name == "star"
    assert Image.objects.get(pk=versions["reviewed_image"].pk).final_label.name == "star"
    assert not checkpoint_exists(old)


def test_a_checkpoint_file_another_version_uses_stays(
    stub_model_version_factory, lead, django_capture_on_commit_callbacks
):
    old = stub_model_version_factory("shared", active=False)
    twin = ModelVersion.objects.create(name="twin", checkpoint=old.checkpoint.name, class_names=old.class_names)
    with django_capture_on_commit_callbacks(execute=True):
        model_version_delete(version=old, user=lead)
    assert checkpoint_exists(twin)


def test_a_rejected_registration_leaves_no_checkpoint_file(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        version = model_version_register(
            name="hostile", checkpoint_file=ContentFile(os.urandom(2048), name="hostile.pth"), validate_now=True
        )
    assert version.validation_status == ModelVersion.Validation.INVALID
    assert not checkpoint_exists(version)
    with pytest.raises(ValidationError, match="register the file again"):
        from predictions.services.model_versions import model_version_revalidate

        model_version_revalidate(version=version)


def test_a_rejected_versions_freed_file_name_taken_by_a_later_file_is_not_validated_as_its_own(
    db, django_capture_on_commit_callbacks
):
    from predictions.services.model_versions import model_version_revalidate

    with django_capture_on_commit_callbacks(execute=True):
        rejected = model_version_register(
            name="garbage", checkpoint_file=ContentFile(os.urandom(2048), name="garbage.pth"), validate_now=True
        )
    later = model_version_register(name="later", checkpoint_file=ContentFile(b"another file", name="garbage.pth"))
    rejected.refresh_from_db()
    assert later.checkpoint.name == "garbage.pth"  # the storage gave the freed name to the new file
    assert rejected.checkpoint.name == ""  # the rejected row no longer names it
    assert "garbage.pth" in rejected.validation_error  # which file was refused is still said

    with pytest.raises(ValidationError, match="register the file again"):
        model_version_revalidate(version=rejected)
    assert ModelVersion.objects.get(pk=rejected.pk).validation_status == ModelVersion.Validation.INVALID


# --- the admin ----------------------------------------------------------------------


def messages_of(response) -> list[str]:
    return [str(m.message) for m in response.wsgi_request._messages]


def test_the_admin_refuses_the_active_version_with_a_message(client_for, lead, versions):
    client = client_for(lead)
    active = versions["active"]

    page = client.get(reverse("admin:predictions_modelversion_delete", args=[active.pk]))
    assert page.status_code == 302
    assert any("activate another version first" in m for m in messages_of(page))
    client.post(reverse("admin:predictions_modelversion_delete", args=[active.pk]), {"post": "yes"})
    action = client.post(
        reverse("admin:predictions_modelversion_changelist"),
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [active.pk, versions["old"].pk], "post": "yes"},
    )
    assert any("activate another version first" in m for m in messages_of(action))
    assert ModelVersion.objects.count() == 2


def test_the_admin_shows_counts_then_deletes(client_for, lead, versions, django_capture_on_commit_callbacks):
    client = client_for(lead)
    old = versions["old"]
    url = reverse("admin:predictions_modelversion_delete", args=[old.pk])

    page = client.get(url)

    assert page.status_code == 200 and not page.context["perms_lacking"]
    assert dict(page.context["model_count"]) == {
        "model versions": 1, "predictions": 2, "prediction failures": 1, "prediction jobs": 1,
    }
    assert "Kept: 1 review(s) made on these predictions" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not ModelVersion.objects.filter(pk=old.pk).exists() and Review.objects.count() == 1
    assert not checkpoint_exists(old)


def test_the_delete_action_shows_counts_for_inactive_versions(client_for, lead, versions):
    response = client_for(lead).post(
        reverse("admin:predictions_modelversion_changelist"),
        {"action": "delete_selected", ACTION_CHECKBOX_NAME: [versions["old"].pk]},
    )
    assert response.status_code == 200
    assert dict(response.context_data["model_count"])["predictions"] == 2
    assert "Kept: 1 review(s) made on these predictions" in response.rendered_content


def test_reviewers_cannot_delete_versions(client_for, reviewer, versions):
    client = client_for(reviewer)
    assert client.post(
        reverse("admin:predictions_modelversion_delete", args=[versions["old"].pk]), {"post": "yes"}
    ).status_code == 403
    assert ModelVersion.objects.count() == 2


# --- a chunk of a version deleted while it runs ---------------------------------------


@pytest.fixture
def running_chunk(stub_model_version_factory, image_factory):
    from predictions.models import PredictionJob

    version = stub_model_version_factory("leaving", active=False)
    image = image_factory()
    job = PredictionJob.objects.create(model_version=version, reason="predict missing", total=1)
    return version, job, image


def model_answer():
    from ml.predictor import Prediction as ModelAnswer

    return ModelAnswer(label="circle", index=0, confidence=0.9, probabilities=(0.9, 0.04, 0.03, 0.02, 0.01))


def assert_quiet_end(result, job, caplog):
    assert result == {"job": job.pk, "skipped": "job deleted"}
    assert not Prediction.objects.exists() and not PredictionFailure.objects.exists()
    [record] = [r for r in caplog.records if r.name == "predictions.services.chunks" and r.levelname == "WARNING"]
    assert "deleted with model version" in record.getMessage() and record.exc_info is None


def test_a_chunk_whose_version_is_deleted_during_inference_ends_quietly(
    running_chunk, monkeypatch, caplog, lead
):
    from predictions.services import chunks
    from predictions.services.chunk_record import ChunkOutcome

    version, job, image = running_chunk

    def run_model_while_the_version_is_deleted(*, model_version, images, **kwargs):
        model_version_delete(version=model_version, user=lead)
        return ChunkOutcome(predictions={image.pk: model_answer()})

    monkeypatch.setattr(chunks, "_run_model", run_model_while_the_version_is_deleted)
    caplog.set_level("INFO")

    assert_quiet_end(chunks.predict_chunk_run(job_id=job.pk, image_ids=[image.pk]), job, caplog)


def test_a_chunk_whose_checkpoint_went_with_its_version_ends_quietly(running_chunk, monkeypatch, caplog, lead):
    from predictions.services import chunks

    version, job, image = running_chunk

    def model_cannot_load(*, model_version, images, **kwargs):
        model_version_delete(version=model_version, user=lead)
        raise FileNotFoundError(model_version.checkpoint.name)

    monkeypatch.setattr(chunks, "_run_model", model_cannot_load)
    caplog.set_level("INFO")

    assert_quiet_end(chunks.predict_chunk_run(job_id=job.pk, image_ids=[image.pk]), job, caplog)


def test_a_foreign_key_error_is_quiet_only_when_the_job_is_gone(running_chunk, monkeypatch, caplog, lead):
    """A server database may find the version gone before the job's lock does."""
    from django.db import IntegrityError

    from predictions.services import chunks
    from predictions.services.chunk_record import ChunkOutcome

    version, job, image = running_chunk
    monkeypatch.setattr(chunks, "_run_model", lambda **kwargs: ChunkOutcome(predictions={image.pk: model_answer()}))

    def foreign_key_error(**kwargs):
        raise IntegrityError("FOREIGN KEY constraint failed")

    monkeypatch.setattr(chunks, "chunk_record", foreign_key_error)
    with pytest.raises(IntegrityError):  # the job is still there: a real error, not hidden
        chunks.predict_chunk_run(job_id=job.pk, image_ids=[image.pk])

    def deleted_then_error(**kwargs):
        model_version_delete(version=version, user=lead)
        foreign_key_error(**kwargs)

    monkeypatch.setattr(chunks, "chunk_record", deleted_then_error)
    caplog.set_level("INFO")
    assert_quiet_end(chunks.predict_chunk_run(job_id=job.pk, image_ids=[image.pk]), job, caplog)
