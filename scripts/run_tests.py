"""`make test`: the whole suite on the embedded defaults, then again on the
scale-out services when they are configured.

TEST_DATABASE_URL (PostgreSQL) re-runs the suite against it, the browser
tests excepted; TEST_REDIS_URL re-runs the integration tests with django-q2's
Redis broker (on that PostgreSQL database when it is set too, else on SQLite).
CI sets both. Without them those parts are skipped, and this says so. Extra
arguments go to every pytest run (a run they leave without tests passes).
"""

import os
import subprocess
import sys
import time

PYTEST = [sys.executable, "-m", "pytest"]
NO_TESTS_COLLECTED = 5  # pytest's exit code when the selection is empty


def run(label: str, args: list[str], extra_env: dict[str, str], results: list[tuple[str, str]]) -> None:
    print(f"\n=== {label} ===", flush=True)
    started = time.monotonic()
    code = subprocess.call(PYTEST + args, env={**os.environ, **extra_env})
    elapsed = f"{time.monotonic() - started:.0f} s"
    if code == 0:
        results.append((label, f"passed ({elapsed})"))
    elif code == NO_TESTS_COLLECTED:
        results.append((label, "no tests selected"))
    else:
        results.append((label, f"FAILED, pytest exit code {code} ({elapsed})"))


def main() -> int:
    args = sys.argv[1:]
    results: list[tuple[str, str]] = []
    skipped: list[str] = []
    run("SQLite + ORM broker (embedded defaults)", args, {}, results)

    database_url = os.environ.get("TEST_DATABASE_URL")
    if database_url:
        run("PostgreSQL + ORM broker", ["-m", "not e2e", *args], {"DATABASE_URL": database_url}, results)
    else:
        skipped.append("PostgreSQL: set TEST_DATABASE_URL=postgres://... to run the suite against it")

    redis_url = os.environ.get("TEST_REDIS_URL")
    if redis_url:
        database = {"DATABASE_URL": database_url} if database_url else {}
        label = ("PostgreSQL" if database_url else "SQLite") + " + Redis broker (integration tests)"
        run(label, ["-m", "integration and not e2e", *args], {**database, "REDIS_URL": redis_url}, results)
    else:
        skipped.append(
            "Redis broker: set TEST_REDIS_URL=redis://... to run the integration tests on it "
            "(with TEST_DATABASE_URL, on PostgreSQL: the two-cluster test needs both)"
        )

    print("\n=== summary ===")
    for label, outcome in results:
        print(f"{label}: {outcome}")
    for reason in skipped:
        print(f"SKIPPED {reason}")
    failed = any(outcome.startswith("FAILED") for _label, outcome in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
