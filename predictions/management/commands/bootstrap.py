"""First-run setup for `make run`; safe to run every time (a second run takes seconds).

1. migrate the database;
2. create a local superuser ``admin`` with a random password when there is no
   superuser (printed once, kept in VAR_DIR/admin-password.txt, mode 600;
   ``manage.py serve`` shows it again until the admin has logged in);
3. when no model version exists: queue the demo model's task
   (predictions.services.demo), which the cluster started by ``manage.py serve``
   runs while the tool is already up: it trains weights/demo.pth (a few minutes
   of CPU, first run only), registers and activates it, and imports a small demo
   upload batch.

Nothing here imports torch: the web server starts as soon as this returns.
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

ADMIN_USERNAME = "admin"
PASSWORD_FILE = "admin-password.txt"


class Command(BaseCommand):
    help = "Migrate, create the local admin user, and queue the demo model and images on first run."

    def add_arguments(self, parser):
        parser.add_argument(
            "--demo-data",
            type=Path,
            default=Path(os.environ.get("DEMO_DATA_DIR") or settings.BASE_DIR / "demo_data"),
            help="where the generated demo images go (default: DEMO_DATA_DIR, else demo_data/, git-ignored)",
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
            self._demo_queue(demo_data, admin_user)
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

    def _demo_queue(self, demo_data: Path, admin_user) -> None:
        from predictions.services.demo import demo_setup_queue

        job = demo_setup_queue(user=admin_user, data_dir=demo_data.resolve())
        if job is not None:
            self._say(
                f"Queued the demo model (training job {job.pk}): the task cluster trains it while the tool "
                "is already up; progress on the admin index and below.",
                self.style.SUCCESS,
            )
