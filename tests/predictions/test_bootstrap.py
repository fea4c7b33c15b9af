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


def test_sets_up_the_demo_model_and_images_once(
    password_file, settings, tmp_path, tiny_checkpoint_bytes, monkeypatch, django_capture_on_commit_callbacks
):
    from images.models import Image, UploadBatch
    from predictions.models import Label, ModelVersion, Prediction

    # A ready checkpoint: the real first run trains it, which takes minutes.
    checkpoint = Path(settings.WEIGHTS_DIR) / "demo.pth"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(tiny_checkpoint_bytes)
    monkeypatch.setattr("predictions.management.commands.bootstrap.DEMO_UPLOAD_COUNT", 5)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))

        version = ModelVersion.objects.get()
        assert (version.name, version.is_active, version.validation_status) == ("demo", True, "valid")
        assert list(Label.objects.values_list("name", "key")) == [
            ("circle", "1"), ("square", "2"), ("triangle", "3"), ("star", "4"), ("cross", "5"),
        ]
        batch = UploadBatch.objects.get()
        assert batch.source == UploadBatch.Source.DEMO and batch.accepted_count == 5
        assert Prediction.objects.filter(model_version=version).count() == 5  # sync mode: predicted inline

        with django_capture_on_commit_callbacks(execute=True):
            call_command("bootstrap", "--demo-data", str(tmp_path / "demo"))
        assert ModelVersion.objects.count() == 1 and UploadBatch.objects.count() == 1 and Image.objects.count() == 5
    finally:
        checkpoint.unlink(missing_ok=True)
