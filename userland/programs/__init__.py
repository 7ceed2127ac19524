"""userland/programs."""
