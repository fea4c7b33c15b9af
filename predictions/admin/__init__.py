"""Admin for the predictions app, one module per area."""

from . import (  # noqa: F401
    auto_accept,
    exports,
    jobs,
    label_audit,
    label_imports,
    labels,
    model_versions,
    operations,
    reviews,
    tokens,
)
