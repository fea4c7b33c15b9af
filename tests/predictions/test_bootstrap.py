"""`manage.py bootstrap`, the first half of `make run`: idempotent, no fixed password."""

import stat
from pathlib import Path

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def password_file(settings):
    path = Path(settings.VAR_DIR) / "admin-password.txt"
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


def test_creates_one_admin_with_a_random_password_kept_private(password_file, django_user_model, capsys):
    call_command("bootstrap", "--no-demo")

    admin = django_user_model.objects.get(is_superuser=True)
    password = password_file.read_text().strip()
    assert admin.username == "admin"
    assert admin.check_password(password) and len(password) >= 16
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password in capsys.readouterr().out

    call_command("bootstrap", "--no-demo")
    assert django_user_model.objects.filter(is_superuser=True).count() == 1
    assert password_file.read_text().strip() == password
    assert password not in capsys.readouterr().out, "the password is printed once, when it is made"


def test_leaves_an_existing_superuser_alone(password_file, superuser, django_user_model):
    call_command("bootstrap", "--no-demo")

    assert list(django_user_model.objects.filter(is_superuser=True)) == [superuser]
    assert not password_file.exists()


def test_queues_the_demo_model_without_training_it(
    password_file, settings, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    """Bootstrap returns at once: the demo model is a cluster task, queued after commit."""
    from predictions.models import ModelVersion, TrainingJob

    monkeypatch.setattr(
        "ml.demo_data.build_demo_checkpoint", lambda *a, **k: pytest.fail("bootstrap must not train")
    )
    queued = []
    monkeypatch.setattr("predictions.services.demo.async_task", lambda *args, **kwargs: queued.append(args))
    monkeypatch.setenv("DEMO_EPOCHS", "3")
    monkeypatch.delenv("DEMO_IMAGES_PER_CLASS", raising=False)
    monkeypatch.delenv("DEMO_INPUT_SIZE", raising=False)
    # Not demo.pth of another test: the real first run has none.
    settings.WEIGHTS_DIR = tmp_path / "weights"

    with django_capture_on_commit_callbacks(execute=True):
        call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))

    job = TrainingJob.objects.get()
    assert job.status == TrainingJob.Status.QUEUED and job.base_version is None
    assert (job.epochs, job.sample_count) == (3, 2000)  # DEMO_EPOCHS from the environment, the product's image count
    assert job.history == {
        "kind": "demo", "data_dir": str((tmp_path / "demo").resolve()), "images_per_class": 400,
        "input_size": 64, "import_upload": True,
    }  # fmt: skip
    assert queued == [("predictions.tasks.train_demo_model", job.pk)]
    assert not ModelVersion.objects.exists()


def test_a_second_run_queues_nothing_once_a_model_version_exists(
    password_file, active_model_version, tmp_path, monkeypatch
):
    from predictions.models import TrainingJob

    queued = []
    monkeypatch.setattr("predictions.services.demo.async_task", lambda *args, **kwargs: queued.append(args))

    call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))

    assert not TrainingJob.objects.exists() and queued == []


def test_a_demo_job_interrupted_by_a_stopped_cluster_is_taken_over(password_file, tmp_path, monkeypatch):
    """Ctrl-C during the first run's training: the next run queues a new job; the old one is failed."""
    from predictions.models import TrainingJob
    from predictions.services.demo import demo_training_run

    monkeypatch.setattr("predictions.services.demo.async_task", lambda *args, **kwargs: None)
    call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))
    first = TrainingJob.objects.get()
    TrainingJob.objects.filter(pk=first.pk).update(status=TrainingJob.Status.RUNNING, epochs_done=5)

    call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))

    first.refresh_from_db()
    second = TrainingJob.objects.exclude(pk=first.pk).get()
    assert first.status == TrainingJob.Status.FAILED and f"training job {second.pk} took over" in first.error
    assert second.status == TrainingJob.Status.QUEUED and second.history["import_upload"] is True
    # The old task, should the broker deliver it again, leaves its failed job alone.
    assert demo_training_run(job_id=first.pk) is None
    first.refresh_from_db()
    assert first.status == TrainingJob.Status.FAILED


def test_the_demo_task_sets_up_the_model_and_images_once(
    password_file, settings, tmp_path, tiny_checkpoint_bytes, monkeypatch, django_capture_on_commit_callbacks
):
    """With demo.pth already there (a new database, old weights): registered, activated, the demo upload predicted."""
    from images.models import Image, UploadBatch
    from predictions.models import Label, ModelVersion, Prediction, TrainingJob

    # Where the weights storage is: the test settings' folder (demo.pth is removed afterwards).
    checkpoint = Path(settings.WEIGHTS_DIR) / "demo.pth"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(tiny_checkpoint_bytes)
    monkeypatch.setattr("ml.demo_data.build_demo_checkpoint", lambda *a, **k: pytest.fail("demo.pth exists"))
    monkeypatch.setattr("predictions.services.demo.DEMO_UPLOAD_COUNT", 5)
    try:
        # Sync mode: the queued task runs inline once the bootstrap's transaction commits.
        with django_capture_on_commit_callbacks(execute=True):
            call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))

        version = ModelVersion.objects.get()
        assert (version.name, version.is_active, version.validation_status) == ("demo", True, "valid")
        assert list(Label.objects.values_list("name", "key")) == [
            ("circle", "1"), ("square", "2"), ("triangle", "3"), ("star", "4"), ("cross", "5"),
        ]  # fmt: skip
        job = TrainingJob.objects.get()
        assert (job.status, job.result_version) == (TrainingJob.Status.DONE, version)
        batch = UploadBatch.objects.get()
        assert batch.source == UploadBatch.Source.DEMO and batch.accepted_count == 5
        assert Prediction.objects.filter(model_version=version).count() == 5  # sync mode: predicted inline

        with django_capture_on_commit_callbacks(execute=True):
            call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))
        assert (ModelVersion.objects.count(), TrainingJob.objects.count()) == (1, 1)
        assert UploadBatch.objects.count() == 1 and Image.objects.count() == 5
    finally:
        checkpoint.unlink(missing_ok=True)


# --- serve's banner --------------------------------------------------------------


def test_the_banner_shows_the_password_until_the_admin_has_logged_in(password_file, django_user_model):
    from django.utils import timezone

    from predictions.management.commands.serve import _password_hint

    call_command("bootstrap", "--no-demo")
    admin = django_user_model.objects.get(is_superuser=True)
    password = password_file.read_text().strip()

    assert password in _password_hint(admin)
    admin.last_login = timezone.now()
    assert password not in _password_hint(admin) and str(password_file) in _password_hint(admin)
