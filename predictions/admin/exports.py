"""Admin: exports."""
