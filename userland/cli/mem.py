"""`llmos mem`: the memory map of a running kernel, per device and per process."""

import argparse

from .common import add_kernel_option, connect, size, table


def add_parser(sub) -> None:
    """Add `llmos mem`."""
    p = sub.add_parser(
        "mem",
        help="print each device's memory map, per process",
        description="Print each device's memory: capacity, used and free bytes, what each process holds "
        "(pid 0 is the kernel: KV pools and shared tensors whose creators left), quotas, each loaded model's "
        "weights, KV and optimizer bytes (its weights shrink when it is quantized or pruned), and each paged KV "
        "pool's blocks.",
    )
    add_kernel_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the memory map."""
    with connect(args, "llmos-mem") as c:
        devices = c.memstat()
        names = {p.pid: p.name for p in c.ps()}
    names[0] = "(kernel)"
    for d in devices:
        print(f"{d.device}: {size(d.used)} used of {size(d.capacity)}, {size(d.free)} free, {d.tensors} tensors")
        rows = [
            [pid, names.get(pid, "?"), size(n), f"{100 * n / d.capacity:.2f}%", size(d.quotas[pid]) if pid in d.quotas else "-"]
            for pid, n in sorted(d.by_process.items())
        ]
        if rows:
            print(table(rows, ["  PID", "NAME", "HOLDS", "OF DEVICE", "QUOTA"]))
        for model in d.models:
            print(f"  model{model.model} ({model.arch}{', ' + model.compression if model.compression else ''}): "
                  f"{size(model.weights + model.kv + model.optimizer)} charged to pid {model.charged}: weights "
                  f"{size(model.weights)}, KV {size(model.kv)}, optimizer {size(model.optimizer)}")  # fmt: skip
        for kv in d.kv_pools:
            print(
                f"  KV pool {kv.pool}: {kv.used}/{kv.total} blocks used ({kv.block_size} tokens, {size(kv.block_bytes)} each), "
                f"{kv.free} free of which {kv.cached} cached, {kv.shared} shared, {kv.sequences} sequences, "
                f"{kv.slack_tokens} empty token slots in partial blocks"
            )
            if kv.prefix_tokens:
                print(f"    prefix cache: {kv.prefix_hits} of {kv.prefix_tokens} prompt tokens found "
                      f"({100 * kv.prefix_hits / kv.prefix_tokens:.1f}% hit rate), {kv.evictions} blocks evicted")  # fmt: skip
            if kv.host_total:
                print(f"    swap: {kv.host_used}/{kv.host_total} host blocks used by {kv.swapped} swapped-out sequences")
            if kv.by_process:
                print(table([[pid, names.get(pid, "?"), blocks] for pid, blocks in sorted(kv.by_process.items())], ["    PID", "NAME", "BLOCKS"]))
        print()
    return 0
