"""Admin: tokens."""
