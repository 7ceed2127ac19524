"""Data-parallel training: the same batches on one replica and on two, on two local CPU devices.

One kernel splits the CPU into two devices (`cpu.count=2`), each driver
host running one torch thread (`cpu.threads=1`). Two models of the same
config and seed (so the same weights) train on the same seeded batches of
`--batch` windows (default 32) of `--window` tokens of the stdlib corpus:
  1 replica   a plain model on cpu0: the whole batch in one host;
  2 replicas  a model replicated on cpu0 and cpu1: half the batch each,
              gradients summed by one gloo all-reduce, the same AdamW step.
After `--warmup` untimed steps (each side's first makes its optimizer, the
replicated one also forms its process group), `--steps` timed steps
alternate between the sides, so a slow spell of the machine falls on both.
Then the same comparison runs `--check-steps` steps in float64, where the
sums of the shards' gradients differ from the whole batch's only far below
anything AdamW turns into a step (in float32 a near-zero gradient element
whose last bits differ can flip the sign of its Adam update, so weights
drift apart by up to about the learning rate: that is float32, not the
all-reduce). Reported:
  dp_step_speedup   median step time with 1 replica / with 2 (target >= 1.6)
  dp_weights_match  the float64 runs' final weights agree within 1e-9
  step times (ms, client side: the call's round trip), the losses, and the
  largest weight difference of each dtype's runs.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime
from llmos.userland.client import Client

from .status import status_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench dp`."""
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32,
                        help="windows per step, split between the replicas (default 32: 16 each)")  # fmt: skip
    parser.add_argument("--window", type=int, default=128, help="tokens per window (default 128)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side (default 8)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side first (default 1)")
    parser.add_argument("--check-steps", type=int, default=2, help="float64 steps per side for dp_weights_match (default 2)")


_say = status_line("dp")


MATCH_ATOL = 1e-9  # float64 weights after a few steps, 1 replica against 2


def _side(c: Client, config: dict, dtype: str, replicas: int) -> int:
    """A fresh tinygpt from seed 0, plain on cpu0 or replicated on cpu0 and cpu1; its handle."""
    devices = ["cpu0", "cpu1"][:replicas]
    return c.model_load(arch="tinygpt", config=config, kv_blocks=1, seed=0, dtype=dtype, devices=devices).model


def _train(c: Client, sides: dict[int, int], stream, steps: int, say: str) -> tuple[dict, dict]:
    """`steps` steps of the same batches on every side, alternating; (seconds, losses) per side."""
    times: dict[int, list[float]] = {n: [] for n in sides}
    losses: dict[int, list[float]] = {n: [] for n in sides}
    for i in range(steps):
        _say(f"{say} {i + 1}/{steps}")
        batch = next(stream).tolist()
        for n, handle in sides.items():
            start = time.perf_counter()
            out = c.train_step(handle, batch)
            times[n].append(time.perf_counter() - start)
            losses[n].append(out.loss)
            if out.replicas != n or out.diverged:
                raise RuntimeError(f"{n} replicas answered {out}")
    return times, losses


def _max_diff(c: Client, storage: str, sides: dict[int, int], name: str) -> float:
    """The largest difference between the sides' final weights (saved by model_save, read with safetensors)."""
    from safetensors.torch import load_file

    final = {}
    for n, handle in sides.items():
        c.model_save(handle, f"{name}{n}.safetensors")
        final[n] = load_file(os.path.join(storage, f"{name}{n}.safetensors"))
        c.model_free(handle)
    return max((final[1][k] - final[2][k]).abs().max().item() for k in final[1] if k.startswith("model."))


def run(args: argparse.Namespace) -> dict:
    """Boot a two-device kernel, train both sides in float32 (timed) and float64 (compared), report."""
    import torch

    from llmos.drivers.models.train import batches, split_corpus, stdlib_corpus

    if min(args.batch, args.window, args.steps, args.check_steps) < 1 or args.warmup < 0:
        raise SystemExit("--batch, --window, --steps and --check-steps must be at least 1, --warmup at least 0")
    config = dict(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, max_len=args.window)
    train, _ = split_corpus(stdlib_corpus(1 << 20))
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    storage = os.path.join(tmp, "storage")
    kcfg = KernelConfig(name=f"bench-dp-{os.getpid()}", runtime_dir=tmp, storage_dir=storage, drivers=["cpu"],
                        driver_options={"cpu": {"count": 2, "threads": 1}}, log_level="error")  # fmt: skip
    _say("booting a kernel with cpu0 and cpu1")
    try:
        with boot.start(kcfg) as kp, Client(kp.address, name="bench-dp") as c:
            stream = batches(train, args.batch, args.window, seed=0)
            sides = {n: _side(c, config, "float32", n) for n in (1, 2)}
            _train(c, sides, stream, args.warmup, "warm-up step")
            times, losses = _train(c, sides, stream, args.steps, "float32 step")
            diff32 = _max_diff(c, storage, sides, "f32-")
            stream = batches(train, args.batch, args.window, seed=1)
            sides = {n: _side(c, config, "float64", n) for n in (1, 2)}
            _, losses64 = _train(c, sides, stream, args.check_steps, "float64 step")
            diff64 = _max_diff(c, storage, sides, "f64-")
    finally:
        runtime.remove(tmp)
        print("\r" + " " * 80 + "\r", end="", file=sys.stderr, flush=True)
    median = {n: statistics.median(t) for n, t in times.items()}
    return {
        "config": config,
        "batch": args.batch,
        "window": args.window,
        "steps": args.steps,
        "threads_per_host": 1,
        "step_ms_1_replica": round(median[1] * 1e3, 1),
        "step_ms_2_replicas": round(median[2] * 1e3, 1),
        "step_ms_1_replica_all": [round(t * 1e3, 1) for t in times[1]],
        "step_ms_2_replicas_all": [round(t * 1e3, 1) for t in times[2]],
        "dp_step_speedup": round(median[1] / median[2], 3),
        "dp_weights_match": diff64 <= MATCH_ATOL,
        "weights_max_diff_float64": diff64,
        "weights_max_diff_float32": diff32,
        "loss_1_replica": [round(x, 5) for x in losses[1]],
        "loss_2_replicas": [round(x, 5) for x in losses[2]],
        "loss_float64_max_rel_diff": max(abs(a - b) / abs(a) for a, b in zip(losses64[1], losses64[2])),
        "torch": torch.__version__,
    }


def report(r: dict) -> str:
    """The figures as a table."""
    cfg = r["config"]
    return "\n".join(
        [
            (f"tinygpt {cfg['d_model']} wide, {cfg['n_layers']} layers; batches of {r['batch']} x {r['window']} tokens; "
             f"{r['steps']} timed steps per side; one torch thread per driver host"),
            f"{'':24}{'1 replica':>12}{'2 replicas':>12}",
            f"{'median step (ms)':24}{r['step_ms_1_replica']:>12}{r['step_ms_2_replicas']:>12}   "
            f"speedup {r['dp_step_speedup']} (target >= 1.6)",
            f"{'last loss':24}{r['loss_1_replica'][-1]:>12}{r['loss_2_replicas'][-1]:>12}",
            f"final weights match (float64 run): {r['dp_weights_match']} (largest difference "
            f"{r['weights_max_diff_float64']:.1e}; float32 run: {r['weights_max_diff_float32']:.1e})",
        ]
    )
