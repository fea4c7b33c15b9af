"""The import boundaries of DESIGN.md, each checked in a fresh interpreter (the one place they are tested).

- ``import ml`` (any of its modules) does not import Django, and ``ml.decode``,
  which the web process uses to validate uploads, does not import torch;
- ``django.setup()``, ``manage.py check``, the admin modules and rendering admin
  pages do not import torch (the web process only loads it to serve the JSON API),
  nor the statistics and audit libraries (scipy, scikit-learn, pandas, cleanlab),
  which load where a bound, an audit or a probe is computed;
- the qcluster parent, which forks the workers, does not import torch (the
  integration test also checks a running cluster's memory maps).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def run_python(code: str, tmp_path: Path, **extra_env: str) -> dict:
    """Run ``code`` in a new interpreter with a clean environment; it prints one JSON object last."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "REVIEWTOOL_TEST_ROOT": str(tmp_path),
        **extra_env,
    }
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_ml_never_imports_django(tmp_path):
    result = run_python(
        """
        import json, sys
        import ml, ml.cores, ml.decode
        decode_only = {"torch": "torch" in sys.modules}
        import ml.checkpoints, ml.demo_data, ml.models, ml.predictor, ml.preprocess, ml.train
        print(json.dumps({"django": sorted(m for m in sys.modules if m.split(".")[0] == "django"),
                          "torch_after_decode": decode_only["torch"], "torch_at_end": "torch" in sys.modules}))
        """,
        tmp_path,
    )
    assert result["django"] == []
    assert result["torch_after_decode"] is False, "ml.decode or ml.cores (used by the web process) imported torch"
    assert result["torch_at_end"] is True, "the check would prove nothing if ml.predictor did not need torch"


def test_web_process_and_admin_pages_do_not_import_torch(tmp_path):
    result = run_python(
        """
        import json, sys
        import django
        django.setup()
        from django.core.management import call_command
        call_command("check", verbosity=0)
        import images.admin, predictions.admin  # noqa: F401
        call_command("migrate", verbosity=0, interactive=False)

        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.test.utils import setup_test_environment
        from images.models import Image

        setup_test_environment()
        Image.objects.create(
            file="images/aa/bb/sample.jpg", sha256="a" * 64, original_name="sample.jpg",
            width=64, height=48, format="JPEG", size_bytes=1234,
        )
        user = get_user_model().objects.create_superuser("boundary", password="not-used-anywhere-else")
        client = Client()
        client.force_login(user)
        pages = ["/admin/", "/admin/images/image/", "/admin/images/uploadbatch/",
                 "/admin/predictions/predictionjob/", "/admin/predictions/prediction/",
                 "/admin/predictions/modelversion/", "/admin/predictions/review/stats/",
                 "/admin/predictions/labelaudit/", "/admin/predictions/autoacceptrun/"]
        statuses = {page: client.get(page).status_code for page in pages}
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "scipy", "sklearn", "pandas", "cleanlab"})
        print(json.dumps({"statuses": statuses, "heavy": heavy}))
        """,
        tmp_path,
        DJANGO_SETTINGS_MODULE="tests.settings",
        SQLITE_PATH=":memory:",
    )
    assert set(result["statuses"].values()) == {200}, result["statuses"]
    assert result["heavy"] == []


def test_qcluster_parent_does_not_import_torch(tmp_path):
    """What the qcluster command imports before it forks: django-q2's cluster, and our task modules."""
    result = run_python(
        """
        import json, pydoc, sys
        import django
        django.setup()
        import django_q.cluster, django_q.management.commands.qcluster  # noqa: F401
        import images.tasks, predictions.tasks  # noqa: F401
        # The hook runs in the cluster's monitor process, which is forked before any worker task.
        assert pydoc.locate("predictions.tasks.predict_chunk_hook") is not None
        print(json.dumps({"torch": "torch" in sys.modules}))
        """,
        tmp_path,
        DJANGO_SETTINGS_MODULE="reviewtool.settings",
        REVIEWTOOL_VAR_DIR=str(tmp_path / "var"),
    )
    assert result["torch"] is False
