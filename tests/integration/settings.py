"""Settings for the real processes the integration tests start (a qcluster).

The test settings, with django-q2's sync mode removed so tasks travel through
the broker (the ORM, or Redis when REDIS_URL is set) to a separate process.
A test may change a cluster's timeouts through the environment it starts it with.
"""

from tests.settings import *  # noqa: F403
from tests.settings import Q_CLUSTER as _TEST_Q_CLUSTER
from tests.settings import env_int

Q_CLUSTER = {key: value for key, value in _TEST_Q_CLUSTER.items() if key != "sync"}
# One worker: two shared CPU cores, and a single forked process to inspect.
Q_CLUSTER.update(
    workers=env_int("Q_WORKERS", 1),
    queue_limit=env_int("Q_QUEUE_LIMIT", 2),
    poll=0.2,
    timeout=env_int("Q_TIMEOUT", 120),
    retry=env_int("Q_RETRY", 180),
)
