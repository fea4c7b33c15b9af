"""Settings for the real processes the integration tests start (a qcluster).

The test settings, with django-q2's sync mode removed so tasks travel through
the broker (the ORM, or Redis when REDIS_URL is set) to a separate process.
"""

from tests.settings import *  # noqa: F403
from tests.settings import Q_CLUSTER as _TEST_Q_CLUSTER

Q_CLUSTER = {key: value for key, value in _TEST_Q_CLUSTER.items() if key != "sync"}
# One worker: two shared CPU cores, and a single forked process to inspect.
Q_CLUSTER.update(workers=1, queue_limit=2, poll=0.2, timeout=120, retry=180)
