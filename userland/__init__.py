"""userland."""
