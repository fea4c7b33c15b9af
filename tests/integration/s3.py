"""A real S3 server for the integration tests: moto's standalone server, on 127.0.0.1 and a free port.

``s3_server`` (module scope) starts ``python -m moto.server``, waits until it
answers, creates one bucket and stops the server (its whole process group)
afterwards. When moto is not installed or the server does not start, the tests
that use it are skipped with the reason.

What moto's server enforces, measured: an unsigned GET of a private object is
refused (403); an unsigned bucket listing is served (real S3 refuses it for a
private bucket); signatures and expiry of presigned URLs are not checked. The
tests therefore check what the product controls: every object written private,
no URL to the store ever handed out unsigned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

STARTUP_TIMEOUT_SECONDS = 30
REGION = "us-east-1"
# moto accepts any credentials; these only have to be the same everywhere.
ACCESS_KEY_ID = "reviewtool-test"
SECRET_ACCESS_KEY = "reviewtool-test-secret"
PUBLIC_GRANTEES = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    process: subprocess.Popen
    log_path: Path

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(signature_version="s3v4"),
        )

    def environment(self) -> dict[str, str]:
        """The settings of a process whose media, exports and checkpoints live in this bucket."""
        return {
            "MEDIA_STORAGE": "s3",
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        }

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", ()))

    def public_grants(self, key: str) -> list[dict]:
        """The grants of ``key`` to anyone but its owner (empty for a private object)."""
        grants = self.client().get_object_acl(Bucket=self.bucket, Key=key)["Grants"]
        return [grant for grant in grants if grant["Grantee"].get("URI") in PUBLIC_GRANTEES]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _answers(endpoint: str) -> bool:
    import requests

    try:
        requests.get(endpoint + "/moto-api/", timeout=1)
    except requests.RequestException:
        return False
    return True


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> S3Server:
    """moto's S3 server with one empty bucket, for the tests of one module."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"moto's S3 server is not installed ({exc}); pip install -r requirements-dev.txt")
    log_path = tmp_path_factory.mktemp("moto") / "moto-server.log"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = S3Server(endpoint=endpoint, bucket=f"reviewtool-{uuid.uuid4().hex[:12]}", process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"moto's S3 server did not start on {endpoint}:\n{server.log()[-2000:]}")
            time.sleep(0.2)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        _stop(process)
