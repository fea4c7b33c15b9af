"""Admin: reviews."""
