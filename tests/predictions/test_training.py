"""Retraining a new model version from reviewed labels, through the admin and the task."""

import pytest

from predictions.models import Label, ModelVersion, TrainingJob
from predictions.services.training import training_job_create, training_run


@pytest.fixture
def reviewed_images(active_model_version, image_factory):
    """20 tiny images reviewed as circle or square (10 each), plus 2 with a label the model lacks."""
    circle, square = Label.objects.get(name="circle"), Label.objects.get(name="square")
    images = [image_factory(final_label=circle if i % 2 else square) for i in range(20)]
    outside = Label.objects.create(name="hexagon", order=9)
    images += [image_factory(final_label=outside) for _ in range(2)]
    return images


def test_training_from_reviews_makes_a_new_inactive_valid_version_with_metrics(
    reviewed_images, active_model_version, lead, client_for, django_capture_on_commit_callbacks
):
    client = client_for(lead)
    train_url = f"/admin/predictions/modelversion/{active_model_version.pk}/train/"
    page = client.get(train_url)
    counts = page.context["counts"]
    assert counts.per_class == {"circle": 10, "square": 10, "triangle": 0, "star": 0, "cross": 0}
    assert counts.other == 2

    with django_capture_on_commit_callbacks(execute=True):  # the training task, sync cluster
        response = client.post(train_url, {"epochs": "2", "learning_rate": "0.001"})
    assert response.status_code == 302

    job = TrainingJob.objects.get()
    assert job.status == TrainingJob.Status.DONE, job.error
    assert (job.base_version, job.created_by, job.epochs, job.epochs_done, job.sample_count) == (
        active_model_version, lead, 2, 2, 20,
    )
    assert len(job.history["train_loss"]) == 2

    new = job.result_version
    assert new.name == f"tiny-v1-retrain-{job.pk}"
    assert not new.is_active and new.validation_status == ModelVersion.Validation.VALID
    assert (new.arch, new.class_names, new.input_size) == (
        active_model_version.arch, active_model_version.class_names, active_model_version.input_size,
    )
    assert {"val_acc", "val_f1", "train_size", "val_size"} <= set(new.metrics)
    assert new.metrics["train_size"] + new.metrics["val_size"] == 20
    assert new.metrics["reviewed_outside_classes"] == 2
    # Its metrics leave out the images it learnt from: the 20 reviewed in its classes.
    trained = {image.pk for image in reviewed_images if image.final_label.name in ("circle", "square")}
    assert set(new.trained_images.values_list("pk", flat=True)) == trained
    assert ModelVersion.objects.get(is_active=True) == active_model_version

    listing = client.get("/admin/predictions/trainingjob/")
    assert listing.status_code == 200 and new.name in listing.content.decode()
    detail = client.get(f"/admin/predictions/trainingjob/{job.pk}/change/")
    assert detail.status_code == 200 and "2 / 2" in detail.content.decode()


def test_retraining_fine_tunes_the_base_versions_weights(
    reviewed_images, model_version_factory, lead, django_capture_on_commit_callbacks
):
    import io

    import torch

    from ml.checkpoints import CheckpointMetadata, load_checkpoint, save_checkpoint
    from ml.models import DEFAULT_ARCH, build_model
    from tests.conftest import DEMO_CLASSES, TINY_INPUT_SIZE

    # Weights no fresh initialisation in training would reproduce (training seeds its own).
    torch.manual_seed(5)
    buffer = io.BytesIO()
    save_checkpoint(buffer, model=build_model(DEFAULT_ARCH, len(DEMO_CLASSES)), metadata=CheckpointMetadata(
        arch=DEFAULT_ARCH, class_names=list(DEMO_CLASSES), input_size=TINY_INPUT_SIZE))  # fmt: skip
    base_version = model_version_factory("distinct-weights", active=False, checkpoint=buffer.getvalue())

    with django_capture_on_commit_callbacks(execute=True):
        job = training_job_create(base_version=base_version, epochs=1, learning_rate=1e-7, user=lead)
    job.refresh_from_db()
    assert job.status == TrainingJob.Status.DONE, job.error

    def weights(version):
        with version.checkpoint.open("rb") as checkpoint:
            return load_checkpoint(checkpoint).model.state_dict()

    base, tuned = weights(base_version), weights(job.result_version)
    # A tiny learning rate barely moves them: the new version started from the base, not from scratch.
    assert torch.allclose(tuned["conv1.weight"], base["conv1.weight"], atol=1e-4)
    assert torch.allclose(tuned["fc.1.weight"], base["fc.1.weight"], atol=1e-4)


def test_training_without_two_reviewed_classes_fails_with_the_reason(
    active_model_version, image_factory, lead, django_capture_on_commit_callbacks
):
    circle = Label.objects.get(name="circle")
    for _ in range(3):
        image_factory(final_label=circle)
    with django_capture_on_commit_callbacks(execute=True):
        job = training_job_create(base_version=active_model_version, epochs=1, learning_rate=1e-3, user=lead)

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED
    assert "covering 1 class(es); at least 2 classes are needed" in job.error
    assert job.result_version is None
    assert ModelVersion.objects.count() == 1


def test_a_finished_job_is_not_trained_again(active_model_version, lead, model_version_factory):
    result = model_version_factory("already-trained", active=False)
    job = TrainingJob.objects.create(
        base_version=active_model_version, status=TrainingJob.Status.DONE, result_version=result
    )
    assert training_run(job_id=job.pk) == result.pk
    assert ModelVersion.objects.count() == 2


def test_the_train_action_opens_the_form_for_one_version(active_model_version, lead, client_for):
    response = client_for(lead).post(
        "/admin/predictions/modelversion/",
        {"action": "train_from_reviews", "_selected_action": [active_model_version.pk]},
    )
    assert response["Location"] == f"/admin/predictions/modelversion/{active_model_version.pk}/train/"


def test_retraining_validates_on_whole_near_duplicate_groups(active_model_version, image_factory, monkeypatch):
    """Copies of one photo (near-equal perceptual hashes) never sit on both sides of the split."""
    import ml.train
    from images.duplicates import clear_cache

    clear_cache()
    from predictions.selectors.splits import VALIDATION, split_of_group

    circle, square = Label.objects.get(name="circle"), Label.objects.get(name="square")
    groups = []
    # A group's side is a hash of its first image's id, which the database hands out: 12 groups
    # all fell on the training side for 0.8^12 = 7% of id ranges, leaving nothing to check. More
    # are made until both sides have one (each group's side as the split will find it).
    while len(groups) < 12 or len({split_of_group(min(group)) == VALIDATION for group in groups}) < 2:
        number = len(groups)
        assert number < 100, "no group on one of the sides after 100 groups"
        base = (number * 0x9E3779B97F4A7C15) & ((1 << 63) - 1) & ~0xFF
        label = circle if number % 2 else square
        groups.append({image_factory(final_label=label, phash=base | member).pk for member in range(3)})
    seen = {}
    original = ml.train.split_samples

    def spy(samples, *, validation=None, **kwargs):
        seen["validation"] = validation
        return original(samples, validation=validation, **kwargs)

    monkeypatch.setattr(ml.train, "split_samples", spy)
    job = training_job_create(base_version=active_model_version, user=None, epochs=1, learning_rate=1e-3)
    training_run(job_id=job.pk)
    clear_cache()

    ids = sorted(pk for group in groups for pk in group)
    side = dict(zip(ids, seen["validation"]))
    assert all(len({side[pk] for pk in group}) == 1 for group in groups)
    assert any(side.values()) and not all(side.values())
