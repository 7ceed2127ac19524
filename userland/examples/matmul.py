"""The first userland program: a matmul on a device, checked against torch.

Run it with `llmos run matmul` (the kernel spawns it) or directly with
`python -m llmos.userland.examples.matmul` next to a running kernel (it
attaches). docs/tutorial-first-program.md walks through it line by line.
"""

import argparse
import sys

import torch

from llmos.userland import Client


def main(argv: list[str]) -> int:
    """Multiply two random matrices through syscalls and compare with torch."""
    parser = argparse.ArgumentParser(prog="matmul", description=__doc__)
    parser.add_argument("--device", default="cpu", help="device name or kind (default: cpu)")
    parser.add_argument("-n", type=int, default=256, help="matrix size (default: 256)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    a = torch.randn(args.n, args.n)
    b = torch.randn(args.n, args.n)

    with Client(name="matmul") as c:
        ha = c.put(a, args.device).handle  # alloc + write: the tensor now lives on the device
        hb = c.put(b, args.device).handle
        out = c.compute("matmul", ha, hb)  # runs in the device's driver host; result in a new handle
        result = c.read(out.handle)  # bytes back into a torch tensor
        for h in (ha, hb, out.handle):
            c.free(h)

    expected = a @ b
    err = (result - expected).abs().max().item()
    rel = err / expected.abs().max().item()
    tol = 2e-2 if out.device.startswith("mocktpu") else 1e-5  # the mock TPU computes in bfloat16
    ok = rel <= tol
    print(
        f"pid {c.pid}: matmul {args.n}x{args.n} on {out.device}: max error vs torch {err:.2e} "
        f"({rel:.1e} of the largest value, tolerance {tol:.0e}) -> {'OK' if ok else 'MISMATCH'}"
    )
    timing = f"device time: {out.wall_s * 1e3:.2f} ms wall (the host computing it)"
    if out.sim_s:
        timing += f", {out.sim_s * 1e3:.4f} ms simulated (the device's cost model)"
    print(timing)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
