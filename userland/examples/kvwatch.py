"""Watch a KV sequence's blocks grow, fork and shrink, through syscalls.

Run it with `llmos run kvwatch` next to a kernel. It makes (or finds) a small
KV pool on the device, allocates a sequence for a prompt, appends tokens one
block at a time, forks it (nothing is allocated), appends to the fork (the
shared partial block is copied), frees both, and prints the block table and
the pool's counts after every step. docs/memory.md walks through its output.
"""

import argparse
import sys

from llmos.userland import Client


def main(argv: list[str]) -> int:
    """Print the pool and block table at every step."""
    parser = argparse.ArgumentParser(prog="kvwatch", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", type=int, default=20, help="prompt length in tokens (default 20)")
    parser.add_argument("--block-size", type=int, default=16)
    args = parser.parse_args(argv)

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
        c.kv_free(seq.seq)
        show("free the parent", c.kv_table(fork.seq))
        c.kv_free(fork.seq)
        show("free the fork")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
