"""Admin: model_versions."""
