"""`make test`: the whole suite on the embedded defaults, then again on the
scale-out services when they are configured.

TEST_DATABASE_URL (PostgreSQL) re-runs the suite against it; TEST_REDIS_URL
re-runs the integration tests with django-q2's Redis broker. CI sets both.
Without them those parts are skipped, and this says so.
"""

import os
import subprocess
import sys

PYTEST = [sys.executable, "-m", "pytest"]


def run(label: str, args: list[str], extra_env: dict[str, str]) -> int:
    print(f"\n=== {label} ===", flush=True)
    return subprocess.call(PYTEST + args, env={**os.environ, **extra_env})


def main() -> int:
    failures = 0
    failures += run("SQLite + ORM broker (embedded defaults)", sys.argv[1:], {}) != 0

    database_url = os.environ.get("TEST_DATABASE_URL")
    if database_url:
        failures += run("PostgreSQL", ["-m", "not e2e"] + sys.argv[1:], {"DATABASE_URL": database_url}) != 0
    else:
        print("\nSKIPPED: PostgreSQL run (set TEST_DATABASE_URL=postgres://... to run the suite against it)")

    redis_url = os.environ.get("TEST_REDIS_URL")
    if database_url and redis_url:
        failures += run(
            "PostgreSQL + Redis broker (integration)",
            ["-m", "integration"] + sys.argv[1:],
            {"DATABASE_URL": database_url, "REDIS_URL": redis_url},
        ) != 0
    else:
        print("SKIPPED: Redis broker run (set TEST_DATABASE_URL and TEST_REDIS_URL to run the integration tests on it)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
