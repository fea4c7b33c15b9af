"""The first run's demo model (predictions.services.demo, predictions.selectors.demo) and what
people are told while it trains: the admin index, the review screen and the API."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from predictions.models import TrainingJob

STILL_TRAINING = (
    "The demo model is still training (epoch 5 of 16, validation accuracy 0.91); predictions start when it is ready."
)


@pytest.fixture
def demo_job_at_epoch_5(db):
    """A demo training job running its sixth of 16 epochs, as the task records it."""
    return TrainingJob.objects.create(
        status=TrainingJob.Status.RUNNING,
        epochs=16,
        epochs_done=5,
        history={"kind": "demo", "data_dir": "/tmp/demo", "val_acc": [0.5, 0.7, 0.8, 0.88, 0.9123]},
    )


def test_the_demo_task_records_its_epochs_and_predicts_what_was_uploaded_meanwhile(
    superuser, settings, tmp_path, make_image, tiny_checkpoint_bytes, monkeypatch, django_capture_on_commit_callbacks
):
    from images.models import UploadBatch
    from images.services import upload_files
    from predictions.models import ModelVersion, Prediction, PredictionJob
    from predictions.selectors.demo import demo_training_latest
    from predictions.services.demo import demo_setup_queue, demo_training_run

    monkeypatch.setattr("predictions.services.demo.async_task", lambda *args, **kwargs: None)
    monkeypatch.setattr("predictions.services.demo.DEMO_UPLOAD_COUNT", 3)
    monkeypatch.setenv("DEMO_EPOCHS", "2")
    monkeypatch.setenv("DEMO_IMAGES_PER_CLASS", "3")
    monkeypatch.setenv("DEMO_INPUT_SIZE", "32")
    job = demo_setup_queue(user=superuser, data_dir=tmp_path / "demo")
    # An upload while the model trains: stored, not predicted (there is no model yet).
    with django_capture_on_commit_callbacks(execute=True):
        batch = upload_files(files=[("early.jpg", SimpleUploadedFile("early.jpg", make_image(seed=3)))], user=superuser)
    assert not PredictionJob.objects.exists()

    seen = {}

    def fake_build(train_dir, out_path, *, count, epochs, input_size, device, progress, on_epoch):
        """The recipe's call, without the minutes of training: two epochs reported, a checkpoint written."""
        seen.update(train_dir=train_dir, count=count, epochs=epochs, input_size=input_size, progress=progress)
        for epoch, accuracy in ((1, 0.625), (2, 0.75)):
            on_epoch(epoch, {"train_loss": [1.0] * epoch, "val_acc": [0.625, 0.75][:epoch]})
            seen[epoch] = demo_training_latest().progress
        Path(out_path).write_bytes(tiny_checkpoint_bytes)
        return out_path

    monkeypatch.setattr("ml.demo_data.build_demo_checkpoint", fake_build)
    checkpoint = Path(settings.WEIGHTS_DIR) / "demo.pth"
    assert not checkpoint.exists()
    try:
        with django_capture_on_commit_callbacks(execute=True):  # sync mode: the prediction chunks run inline
            version_id = demo_training_run(job_id=job.pk)

        assert seen == {
            "train_dir": tmp_path / "demo" / "train", "count": 15, "epochs": 2, "input_size": 32, "progress": False,
            1: "epoch 1 of 2, validation accuracy 0.62", 2: "trained, being registered and activated",
        }  # fmt: skip
        job.refresh_from_db()
        version = ModelVersion.objects.get(pk=version_id)
        assert (job.status, job.result_version, job.epochs_done) == (TrainingJob.Status.DONE, version, 2)
        assert job.history["kind"] == "demo" and job.history["val_acc"] == [0.625, 0.75]
        assert (version.name, version.is_active) == ("demo", True)
        # The early upload came in through activation's "predict missing", the demo upload after it.
        assert Prediction.objects.filter(model_version=version, image__batch=batch).count() == 1
        assert list(PredictionJob.objects.order_by("pk").values_list("reason", "total")) == [
            ("activation", 1), ("upload", 3),
        ]  # fmt: skip
        demo_batch = UploadBatch.objects.get(source=UploadBatch.Source.DEMO)
        assert Prediction.objects.filter(model_version=version, image__batch=demo_batch).count() == 3
        assert not list(checkpoint.parent.glob("demo.pth.partial*"))
    finally:
        checkpoint.unlink(missing_ok=True)


def test_a_tool_that_has_images_gets_no_demo_upload(superuser, image_factory, tmp_path, monkeypatch):
    from predictions.services.demo import demo_setup_queue

    monkeypatch.setattr("predictions.services.demo.async_task", lambda *args, **kwargs: None)
    image_factory()

    assert demo_setup_queue(user=superuser, data_dir=tmp_path / "demo").history["import_upload"] is False


def test_a_failed_training_is_recorded_with_its_reason(superuser, tmp_path, monkeypatch):
    from predictions.selectors.demo import demo_training_unfinished
    from predictions.services.demo import demo_setup_queue, demo_training_run

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("predictions.services.demo.async_task", lambda *args, **kwargs: None)
    monkeypatch.setattr("ml.demo_data.build_demo_checkpoint", broken)
    job = demo_setup_queue(user=superuser, data_dir=tmp_path / "demo")

    assert demo_training_run(job_id=job.pk) is None

    job.refresh_from_db()
    assert job.status == TrainingJob.Status.FAILED and job.error == "OSError: No space left on device"
    assert demo_training_unfinished().waiting_message.startswith(
        f"The demo model's training failed (training job {job.pk}: OSError: No space left on device)"
    )


def test_the_admin_index_shows_the_demo_models_progress(demo_job_at_epoch_5, client_for, superuser):
    response = client_for(superuser).get(reverse("admin:index"))

    assert "Demo model: epoch 5 of 16, validation accuracy 0.91" in response.content.decode()


def test_the_admin_index_says_nothing_once_the_demo_model_is_done(demo_job_at_epoch_5, client_for, superuser):
    TrainingJob.objects.filter(pk=demo_job_at_epoch_5.pk).update(status=TrainingJob.Status.DONE)

    response = client_for(superuser).get(reverse("admin:index"))

    assert "Demo model:" not in response.content.decode()


def test_the_review_screen_says_the_model_is_still_training(demo_job_at_epoch_5, client_for, superuser):
    response = client_for(superuser).get(reverse("admin:predictions_review_screen"))

    assert response.status_code == 200
    assert STILL_TRAINING in response.content.decode()


def test_the_api_says_the_model_is_still_training(demo_job_at_epoch_5, superuser, client, make_image):
    from predictions.services.tokens import api_token_create

    token = api_token_create(user=superuser, name="tests")[1]
    response = client.post(
        reverse("predictions:predict"),
        {"images": [SimpleUploadedFile("a.jpg", make_image(seed=1))]},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == 503
    assert response.json()["error"] == STILL_TRAINING
    assert response.headers["Retry-After"] == "30"


def test_the_api_page_says_the_model_is_still_training(demo_job_at_epoch_5, client_for, superuser):
    response = client_for(superuser).get(reverse("predictions:predict"))

    assert STILL_TRAINING in response.content.decode()


def test_the_recipe_is_the_products_unless_the_environment_shrinks_it(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from ml.demo_data import DEMO_COUNT, DEMO_EPOCHS, DEMO_INPUT_SIZE
    from predictions.services.demo import DemoRecipe

    for name in ("DEMO_IMAGES_PER_CLASS", "DEMO_EPOCHS", "DEMO_INPUT_SIZE"):
        monkeypatch.delenv(name, raising=False)
    recipe = DemoRecipe.from_environment()
    assert (recipe.image_count, recipe.epochs, recipe.input_size) == (DEMO_COUNT, DEMO_EPOCHS, DEMO_INPUT_SIZE)

    monkeypatch.setenv("DEMO_EPOCHS", "0")
    with pytest.raises(ImproperlyConfigured, match="DEMO_EPOCHS='0': expected a positive integer"):
        DemoRecipe.from_environment()
