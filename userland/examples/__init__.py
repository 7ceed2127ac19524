"""Example userland programs, walked through in docs/tutorial-first-program.md."""
