"""Test settings: the project's settings with media, weights and local state in a temp folder.

The paths are set through the environment before the project's settings are
read, so subprocesses started by the integration tests (a real qcluster, a
live server) see the same folders.
"""

import atexit
import os
import shutil
import tempfile

if "REVIEWTOOL_TEST_ROOT" not in os.environ:
    # The test run owns the folder (subprocesses inherit it through the
    # environment) and removes it when it ends: each run writes gigabytes of
    # checkpoints and images, which must not pile up on a CI machine's disk.
    os.environ["REVIEWTOOL_TEST_ROOT"] = tempfile.mkdtemp(prefix="reviewtool-test-")
    atexit.register(shutil.rmtree, os.environ["REVIEWTOOL_TEST_ROOT"], ignore_errors=True)
_root = os.environ["REVIEWTOOL_TEST_ROOT"]
os.environ.setdefault("MEDIA_ROOT", os.path.join(_root, "media"))
os.environ.setdefault("WEIGHTS_DIR", os.path.join(_root, "weights"))
os.environ.setdefault("REVIEWTOOL_VAR_DIR", os.path.join(_root, "var"))
# WhiteNoise serves from the finders in tests; it only needs the folder to exist.
os.environ.setdefault("STATIC_ROOT", os.path.join(_root, "static"))
os.makedirs(os.environ["STATIC_ROOT"], exist_ok=True)
# A file, not :memory:, so the integration tests' real qcluster process can
# open the same SQLite test database (ignored when DATABASE_URL is set).
os.environ.setdefault("SQLITE_TEST_PATH", os.path.join(_root, "test-db.sqlite3"))
# The suite's models are tiny and the test process, a live server and a
# qcluster share two cores: one torch thread each avoids oversubscription.
os.environ.setdefault("INFERENCE_THREADS", "1")

from reviewtool.settings import *  # noqa: E402,F403

# Unit tests run tasks inline (django-q2's sync mode); the integration tests
# start a real qcluster with its own settings.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Gold images are mixed into the queue at random; a test that counts queries or
# expects a given item opts in (tests/predictions/test_gold.py sets the rate).
REVIEW_GOLD_RATE = 0.0
