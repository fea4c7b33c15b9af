"""Reads shared by more than one view of the predictions app, one module per area."""
