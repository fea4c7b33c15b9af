"""predictions.statistics is Django-free and torch-free: checked in a fresh interpreter."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_statistics_import_neither_django_nor_torch():
    code = (
        "import json, sys\n"
        "import predictions.statistics.acceptance, predictions.statistics.agreement, predictions.statistics.simulation\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'torch', 'sklearn'})))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
