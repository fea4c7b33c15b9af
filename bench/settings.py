"""Benchmark settings: the project's production settings, with all state in a temp folder.

``bench.common.project_env`` puts the folder paths in the environment before these
settings are read, so the subprocesses a benchmark starts (a qcluster, a gunicorn
server) share the same database, media and weights.
"""

import os
import tempfile

if "REVIEWTOOL_BENCH_ROOT" not in os.environ:
    os.environ["REVIEWTOOL_BENCH_ROOT"] = tempfile.mkdtemp(prefix="reviewtool-bench-")
_root = os.environ["REVIEWTOOL_BENCH_ROOT"]
os.environ.setdefault("SQLITE_PATH", os.path.join(_root, "db.sqlite3"))
os.environ.setdefault("MEDIA_ROOT", os.path.join(_root, "media"))
os.environ.setdefault("WEIGHTS_DIR", os.path.join(_root, "weights"))
os.environ.setdefault("REVIEWTOOL_VAR_DIR", os.path.join(_root, "var"))
os.environ.setdefault("STATIC_ROOT", os.path.join(_root, "static"))
os.makedirs(os.environ["STATIC_ROOT"], exist_ok=True)
# Measure what production runs: DEBUG off (no query log, cached templates).
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-a-secret")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")

from reviewtool.settings import *  # noqa: E402,F403

# Production serves static files from collectstatic's manifest; the admin pages
# measured here only need the URLs, so skip the collectstatic step.
STORAGES = {  # noqa: F405
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# A gold image is drawn into a screen at random (REVIEW_GOLD_RATE) and costs one query more
# when it is: off here, so the pages compared at 1k and 100k do the same work.
REVIEW_GOLD_RATE = 0.0
