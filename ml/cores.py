"""How many cores this process may use: the one rule every pool of threads the tool starts sizes itself by.

No torch and no Django: the web process sizes its upload and similarity threads with it.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's share), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
