"""Production settings: configured by the environment alone, secure by default."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    clean_env.update(DJANGO_SETTINGS_MODULE="reviewtool.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=clean_env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_check_deploy(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
        DJANGO_ALLOWED_HOSTS="review.example.com",
        REVIEWTOOL_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = manage("check", DJANGO_DEBUG="0", REVIEWTOOL_VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_scale_out_is_configured_by_environment(tmp_path):
    probe = (
        "from django.conf import settings;"
        "print(settings.DATABASES['default']['ENGINE']);"
        "print(settings.Q_CLUSTER.get('redis'), settings.Q_CLUSTER.get('orm'),"
        " settings.Q_CLUSTER['workers'], settings.Q_CLUSTER['poll']);"
        "print(settings.INFERENCE_DEVICE, settings.INFERENCE_BATCH_SIZE, settings.INFERENCE_PRECISION)"
    )
    embedded = manage("shell", "-v", "0", "-c", probe, REVIEWTOOL_VAR_DIR=str(tmp_path))
    assert embedded.returncode == 0, embedded.stderr
    assert embedded.stdout.split("\n")[:3] == [
        "django.db.backends.sqlite3",
        "None default 1 0.2",
        "auto 32 auto",
    ]
    scaled = manage(
        "shell",
        "-v",
        "0",
        "-c",
        probe,
        REVIEWTOOL_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/0",
        Q_WORKERS="4",
        Q_POLL="1.5",
        INFERENCE_DEVICE="cuda",
        INFERENCE_BATCH_SIZE="128",
        INFERENCE_PRECISION="fp16",
    )
    assert scaled.returncode == 0, scaled.stderr
    assert scaled.stdout.split("\n")[:3] == [
        "django.db.backends.postgresql",
        "redis://127.0.0.1:6379/0 None 4 1.5",
        "cuda 128 fp16",
    ]


def test_a_malformed_number_in_the_environment_is_named(tmp_path):
    for name, value, expected in [("Q_POLL", "soon", "a number"), ("Q_WORKERS", "two", "an integer")]:
        result = manage("check", REVIEWTOOL_VAR_DIR=str(tmp_path), **{name: value})
        assert result.returncode != 0
        assert f"{name} must be {expected}, got {value!r}" in result.stderr
