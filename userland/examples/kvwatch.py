"""Watch a KV sequence's blocks grow, fork and shrink, through syscalls.

Run it with `llmos run kvwatch` next to a kernel. It makes (or finds) a small
KV pool on the device, allocates a sequence for a prompt, appends tokens one
block at a time, forks it (nothing is allocated), appends to the fork (the
shared partial block is copied), frees both, and prints the block table and
the pool's counts after every step. docs/memory.md walks through its output.

With --hold S it stops for S seconds while it holds its sequences (after
the fork), printing its pid, so that you can look at `llmos mem` or kill it
with `llmos kill PID` and see where the blocks go.
"""

import argparse
import sys
import time

from llmos.userland import Client


def main(argv: list[str]) -> int:
    """Print the pool and block table at every step."""
    parser = argparse.ArgumentParser(prog="kvwatch", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", type=int, default=20, help="prompt length in tokens (default 20)")
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--hold", type=float, default=0.0, metavar="S",
                        help="hold the blocks S seconds after the fork (default 0)")
    args = parser.parse_args(argv)
    if args.hold < 0:
        parser.error("--hold must be >= 0")

    with Client(name="kvwatch") as c:
        pool = c.kv_pool(args.device, layers=2, kv_heads=2, head_dim=16, block_size=args.block_size, blocks=64)

        def show(step: str, seq=None) -> None:
            kv = {p.pool: p for d in c.memstat() for p in d.kv_pools}[pool.pool]
            table = f"table {seq.table} ({seq.num_tokens} tokens, {seq.shared} shared)" if seq else ""
            print(f"{step:38} {table:40} pool: {kv.used:2} used, {kv.free:2} free, {kv.shared} shared")

        print(f"pool {pool.pool} on {pool.device}: {pool.num_blocks} blocks of {pool.block_size} tokens")
        seq = c.kv_alloc(args.device, pool.pool, args.prompt)
        show(f"alloc prompt of {args.prompt}", seq)
        seq = c.kv_append(seq.seq, args.block_size)
        show(f"append {args.block_size}", seq)
        fork = c.kv_fork(seq.seq)
        show("fork (copies nothing)", fork)
        fork = c.kv_append(fork.seq, 1)
        show(f"append 1 to the fork: copies {fork.copies}", fork)
        if args.hold:
            print(f"holding {len(set(seq.table) | set(fork.table))} blocks for {args.hold:g} s: "
                  f"`llmos mem`, or `llmos kill {c.pid}`", flush=True)
            time.sleep(args.hold)
        c.kv_free(seq.seq)
        show("free the parent", c.kv_table(fork.seq))
        c.kv_free(fork.seq)
        show("free the fork")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
