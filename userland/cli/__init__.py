"""userland/cli."""
