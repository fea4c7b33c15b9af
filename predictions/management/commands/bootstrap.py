"""First-run setup for `make run`; safe to run every time (a second run takes seconds).

1. migrate the database;
2. create a local superuser ``admin`` with a random password when there is no
   superuser (printed once, kept in VAR_DIR/admin-password.txt, mode 600);
3. when no model version exists: train the demo checkpoint (weights/demo.pth,
   a few minutes of CPU, only the first time), register it and activate it;
4. when no image exists: import a small demo upload batch; the cluster
   predicts it once `manage.py serve` (or any `qcluster`) runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_VERSION_NAME = "demo"
DEMO_CHECKPOINT = "demo.pth"
DEMO_UPLOAD_COUNT = 40
# Not the seed of the training images: the demo upload is new to the model.
DEMO_UPLOAD_SEED = 1
ADMIN_USERNAME = "admin"
PASSWORD_FILE = "admin-password.txt"


class Command(BaseCommand):
    help = "Migrate, create the local admin user, and set up the demo model and images on first run."

    def add_arguments(self, parser):
        parser.add_argument(
            "--demo-data",
            type=Path,
            default=settings.BASE_DIR / "demo_data",
            help="where the generated demo images go (default: demo_data/, git-ignored)",
        )
        parser.add_argument(
            "--no-demo", action="store_true", help="skip the demo model and images (bring your own checkpoint)"
        )

    def handle(self, *args, demo_data: Path, no_demo: bool, **options):
        started = time.monotonic()
        self.verbosity = options["verbosity"]
        call_command("migrate", interactive=False, verbosity=max(0, self.verbosity - 1))
        admin_user = self._superuser()
        if not no_demo:
            self._demo_model(demo_data, admin_user)
            self._demo_images(demo_data, admin_user)
        self._say(f"Bootstrap done in {time.monotonic() - started:.1f} s.")

    def _say(self, message: str, style=None) -> None:
        if self.verbosity:
            self.stdout.write(style(message) if style else message)

    # --- the admin user ------------------------------------------------------------

    def _superuser(self):
        User = get_user_model()
        existing = User.objects.filter(is_superuser=True).order_by("pk").first()
        if existing is not None:
            return existing
        if User.objects.filter(username=ADMIN_USERNAME).exists():
            raise CommandError(
                f"A user named {ADMIN_USERNAME!r} exists but there is no superuser; "
                "run `manage.py createsuperuser` yourself."
            )
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)
        password_file = Path(settings.VAR_DIR) / PASSWORD_FILE
        with contextlib.suppress(FileNotFoundError):
            password_file.unlink()  # an old file from a deleted database
        # Created readable by the owner only, never world-readable even for a moment.
        descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(password + "\n")
        self._say(
            f"Created the superuser {ADMIN_USERNAME!r} with password {password} (saved in {password_file}).",
            self.style.SUCCESS,
        )
        return user

    # --- the demo model ------------------------------------------------------------

    def _demo_model(self, demo_data: Path, admin_user) -> None:
        from predictions.models import ModelVersion

        if ModelVersion.objects.exists():
            return
        checkpoint = Path(settings.WEIGHTS_DIR) / DEMO_CHECKPOINT
        if not checkpoint.is_file():
            self._train_demo_checkpoint(demo_data / "train", checkpoint)

        from ml.demo_data import CLASS_NAMES
        from predictions.services.labels import labels_ensure
        from predictions.services.model_versions import model_version_activate, model_version_register

        # The taxonomy in the demo's own order (on a fresh install: keys 1-5 on the review screen).
        labels_ensure(names=CLASS_NAMES)
        version = model_version_register(
            name=DEMO_VERSION_NAME,
            checkpoint_path=checkpoint,
            notes="Demo model: five shapes, trained by `manage.py bootstrap` on generated images.",
            user=admin_user,
            validate_now=True,
        )
        if version.validation_status != ModelVersion.Validation.VALID:
            raise CommandError(f"The demo checkpoint is not usable: {version.validation_error}")
        model_version_activate(version=version, user=admin_user)
        self._say(f"Registered and activated model version {version.name!r}.", self.style.SUCCESS)

    def _train_demo_checkpoint(self, train_dir: Path, checkpoint: Path) -> None:
        from ml.demo_data import build_demo_checkpoint

        self._say(f"Training the demo model into {checkpoint} (first run only; a few minutes on a CPU)...")
        started = time.monotonic()
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so an interrupted run never leaves a half file behind.
        partial = checkpoint.with_name(checkpoint.name + ".partial")
        build_demo_checkpoint(train_dir, partial, progress=self.verbosity > 0)
        os.replace(partial, checkpoint)
        self._say(f"Trained the demo model in {time.monotonic() - started:.0f} s.", self.style.SUCCESS)

    # --- the demo images -------------------------------------------------------------

    def _demo_images(self, demo_data: Path, admin_user) -> None:
        from images.models import Image, UploadBatch
        from images.services import upload_files
        from ml.demo_data import generate

        if Image.objects.exists():
            return
        upload_dir = demo_data / "upload"
        paths = sorted(upload_dir.glob("*/*.jpg"))
        if len(paths) < DEMO_UPLOAD_COUNT:
            generate(upload_dir, count=DEMO_UPLOAD_COUNT, seed=DEMO_UPLOAD_SEED, progress=self.verbosity > 0)
            paths = sorted(upload_dir.glob("*/*.jpg"))
        # Interleave the classes and hide them: the file names must not give the answer away.
        paths = sorted(paths, key=lambda path: path.stem.rsplit("_", 1)[-1])[:DEMO_UPLOAD_COUNT]
        with contextlib.ExitStack() as stack:
            files = [
                (f"demo-{number:03d}.jpg", stack.enter_context(path.open("rb")))
                for number, path in enumerate(paths, start=1)
            ]
            batch = upload_files(files=files, user=admin_user, source=UploadBatch.Source.DEMO, name="Demo images")
        self._say(
            f"Imported {batch.accepted_count} demo images; the cluster predicts them once it runs.",
            self.style.SUCCESS,
        )
