"""The course's figures, drawn from the system's own state, so that a picture cannot drift from the code.

Each module computes what it draws from real objects (a booted kernel's
process and device tables, the memory service's `KVCache`, the scheduler's
own ticks), returns that data for tests to check, and writes a PNG.
`python -m llmos.userland.figures DIR` draws them all into DIR (the docs'
are in docs/images/); tests/docs/test_figures.py draws each again.
matplotlib is imported only while drawing, with the Agg backend.
"""
