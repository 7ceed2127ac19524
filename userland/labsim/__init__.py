"""Seeded homework simulators of the memory service and the process table, in the manner of OSTEP's.

Each module draws a small exercise from a seed, runs it on the system's own
parts (the memory service's `KVCache`; for lifecycle, the kernel's process
and tensor tables too, in procworld.py), so the answers are the system's
answers, and prints it twice over: without -c the arguments, the operations
and the questions; with -c the same, each step followed by the state it
left, and the answers. `llmos sim paging|prefix|admit|lifecycle` runs them
(userland/cli/sim.py).
"""
