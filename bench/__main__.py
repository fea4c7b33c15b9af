"""``python -m bench``: every benchmark, one table of ratios.

    python -m bench                       # the default size (medium), every benchmark
    python -m bench --size small          # a quick check
    python -m bench --only pipeline tutorial

Each benchmark runs in its own process (``python -m bench.<name>``, which also
takes explicit counts: ``python -m bench.pipeline --photos 500``). The table is
printed as markdown, ready for the README, and written with the raw numbers to
bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    DEFAULT_SIZE,
    PYTHON,
    REPO_ROOT,
    RESULTS_DIR,
    SIZE_NAMES,
    Report,
    Row,
    describe_machine,
    machine_info,
    markdown_table,
)

BENCHMARKS = ("pipeline", "tutorial", "precision", "admin_scale", "export_scale", "near_duplicates", "label_import",
              "auto_accept", "label_audit", "similar", "reviewer_stats")
TIMEOUT_SECONDS = 45 * 60


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=SIZE_NAMES, default=DEFAULT_SIZE)
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=BENCHMARKS, metavar="NAME",
                        help=f"run only these: {', '.join(BENCHMARKS)}")  # fmt: skip
    options = parser.parse_args()

    machine = machine_info()
    print(f"Machine: {describe_machine(machine)}\nSize: {options.size}\n", flush=True)
    reports: dict[str, Report] = {}
    errors: dict[str, str] = {}
    started = time.time()
    for name in options.only:
        print(f"=== {name} ===", flush=True)
        try:
            reports[name] = run_benchmark(name, size=options.size)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            errors[name] = str(exc)
            print(f"FAILED: {exc}", flush=True)

    rows = [row for report in reports.values() for row in report.rows]
    rows += [Row(name, "did not finish", "-", "-", None, "-", False) for name in errors]
    notes = [note for report in reports.values() for note in report.notes]
    table = markdown_table(rows)
    print(f"\n## Benchmarks ({options.size}; {describe_machine(machine)})\n\n{table}\n")
    for note in notes:
        print(f"- {note}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    latest = RESULTS_DIR / "latest.json"
    latest.write_text(json.dumps({
        "size": options.size, "machine": machine,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "minutes": round((time.time() - started) / 60, 1), "table": table,
        "benchmarks": {name: report.to_dict() for name, report in reports.items()}, "errors": errors,
    }, indent=2))  # fmt: skip
    print(f"\nWritten to {latest.relative_to(REPO_ROOT)} ({(time.time() - started) / 60:.1f} min)")
    return 1 if errors else 0


def run_benchmark(name: str, *, size: str) -> Report:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "report.json"
        command = [PYTHON, "-m", f"bench.{name}", "--size", size, "--json-out", str(out)]
        subprocess.run(command, cwd=REPO_ROOT, check=True, timeout=TIMEOUT_SECONDS)
        return Report.from_dict(json.loads(out.read_text()))


if __name__ == "__main__":
    sys.exit(main())
