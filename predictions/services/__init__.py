"""Writes of the predictions app, one module per area (jobs, reviews, model_versions, exports, tokens)."""
