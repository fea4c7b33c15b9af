"""Admin for the predictions app, one module per area."""

from . import exports, jobs, model_versions, operations, reviews, tokens  # noqa: F401
