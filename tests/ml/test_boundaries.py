"""The web process imports ml.decode to validate uploads: it must stay torch-free."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def modules_after_import(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(result.stdout.split())


def test_ml_and_decode_import_neither_torch_nor_django():
    loaded = modules_after_import("import ml, ml.decode")
    assert "torch" not in loaded
    assert "django" not in loaded


def test_torch_side_never_imports_django():
    loaded = modules_after_import("import ml.predictor, ml.train, ml.demo_data")
    assert "torch" in loaded  # the check below means something
    assert "django" not in loaded
