"""Scale-out settings from the environment: redelivery, the sweep, django-q2's shared cache."""

from tests.test_settings import manage

PROBE = (
    "from django.conf import settings;"
    "print(settings.Q_CLUSTER['timeout'], settings.Q_CLUSTER['retry'], settings.PREDICTION_SWEEP_AFTER_SECONDS);"
    "print(settings.CACHES[settings.Q_CLUSTER['cache']]['BACKEND'])"
)


def probe(tmp_path, **env: str) -> list[str]:
    result = manage("shell", "-v", "0", "-c", PROBE, REVIEWTOOL_VAR_DIR=str(tmp_path), **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:2]


def test_embedded_defaults_redeliver_after_the_timeout_and_share_cluster_status_through_the_database(tmp_path):
    assert probe(tmp_path) == ["1800 2100 900", "django.core.cache.backends.db.DatabaseCache"]


def test_timeouts_come_from_the_environment_and_cluster_status_goes_to_redis(tmp_path):
    lines = probe(
        tmp_path,
        Q_TIMEOUT="600",
        Q_RETRY="660",
        PREDICTION_SWEEP_AFTER_SECONDS="120",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert lines == ["600 660 120", "django.core.cache.backends.redis.RedisCache"]
