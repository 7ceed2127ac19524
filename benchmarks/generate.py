"""Generation and training through llmos against the same model run in-process with plain torch.

One run, one model (tinygpt, seeded weights, written as a checkpoint and
loaded by the kernel, so both sides hold the same weights), one device: the
raw side's model and inputs are moved to the torch device of llmos's
`--device` (`raw_device`: `cudaN` is `cuda:N`, every other kind computes on
the host CPU), so a GPU run compares a GPU with a GPU:
  single stream  greedy generation of `--new` tokens from a `--prompt`-token
                 prompt: in-process with a contiguous KV cache
                 (`greedy_contiguous`, the raw baseline) vs one generate call
                 through llmos (paged KV, kernel, driver host, streaming).
                 `single_stream_ratio` = llmos tokens/s / raw tokens/s.
  batching       `--procs` llmos processes (attached clients, one model shared
                 by handle) each generating at once vs the same requests
                 served one after another through llmos.
                 `batching_speedup` = aggregate tokens/s at once / one by one.
  training       one AdamW step on a `--batch` x (`--window` + 1) batch of the
                 stdlib corpus: in-process `train_step` vs the `train_step`
                 syscall. `train_step_ratio` = raw step time / llmos step time.
Generation is timed in rounds after a warm-up round; each round runs the four
sides back to back (raw and one call `--pairs` times each, alternating, then
one by one, then at once) and each figure is its best run, so a slow spell of
a shared machine does not fall on one side only. The ratios of each round's
own best runs are reported too, as their median (`*_median`): what a typical
round saw. Training alternates raw and llmos steps and takes the median of
`--steps`. The greedy texts are compared: raw against one llmos call
(`outputs_match`), and the requests one by one against the same requests at
once (`batched_outputs_match`).
`--dtype` sets both sides' weights and KV cache, `--graphs` has the CUDA
driver replay decode steps as CUDA graphs, and with `--peak-bw` (the
device's memory bandwidth, GB/s) each side's single stream is also put
against the roofline: `roofline_frac` = weight bytes per token x tokens/s /
peak bandwidth (each token reads every weight once).
"""

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from functools import partial

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime
from llmos.userland.aclient import AsyncClient
from llmos.userland.client import Client

from .status import status_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench generate`."""
    parser.add_argument("--device", default="cpu", help="device for both sides (default: cpu)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens (default 32)")
    parser.add_argument("--new", type=int, default=128, help="tokens to generate per request (default 128)")
    parser.add_argument("--procs", type=int, default=8, help="concurrent processes (default 8)")
    parser.add_argument("--repeats", type=int, default=8, help="timed generation rounds (default 8; each figure is its best round)")
    parser.add_argument("--pairs", type=int, default=8, help="raw and llmos single-stream runs per round (default 8)")
    parser.add_argument("--batch", type=int, default=16, help="training batch (default 16)")
    parser.add_argument("--window", type=int, default=128, help="training window (default 128)")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per side (default 8)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="both sides' weights and KV cache (default float32)")
    parser.add_argument("--graphs", action="store_true",
                        help="the CUDA driver replays decode steps as CUDA graphs (its option graphs)")
    parser.add_argument("--peak-bw", type=float, default=0.0, metavar="GB/S",
                        help="the device's peak memory bandwidth: also report roofline_frac, the share of it each "
                             "side's single stream reads weights at")  # fmt: skip


_say = status_line("generate")


def raw_device(device: str) -> str:
    """The torch device the raw side runs on for llmos device `device`: `cuda:N` for `cudaN`, else "cpu"
    (the CPU's devices, the mock TPU, which computes on the host, and any other kind llmos may serve)."""
    cuda = re.fullmatch(r"cuda(\d*)", device)
    return f"cuda:{cuda[1] or 0}" if cuda else "cpu"


def _prompts(n: int, length: int) -> list[list[int]]:
    """`n` seeded prompts of `length` byte ids."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return torch.randint(32, 127, (n, length), generator=gen).tolist()


def run(args: argparse.Namespace) -> dict:
    """Boot a kernel, measure the three pairs, shut down."""
    import torch  # here, not at the top: `llmos --help` should not load torch

    from llmos.drivers.models.checkpoint import save_checkpoint
    from llmos.drivers.models.tinygpt import TinyGPT, TinyGPTConfig
    from llmos.drivers.models.tokenizer import EOS, ByteTokenizer

    config = TinyGPTConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, max_len=max(256, args.window))
    if args.prompt + args.new - 1 > config.max_len:
        raise SystemExit(f"--prompt + --new must stay within {config.max_len + 1}")
    if min(args.repeats, args.pairs, args.procs, args.steps) < 1:
        raise SystemExit("--repeats, --pairs, --procs and --steps must be at least 1")
    torch.manual_seed(0)
    model = TinyGPT(config).eval()
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    storage = os.path.join(tmp, "storage")
    os.makedirs(storage)
    save_checkpoint(os.path.join(storage, "bench.safetensors"), model)
    prompts = _prompts(args.procs, args.prompt)
    blocks = args.procs * -(-(args.prompt + args.new) // 16) + 8
    dev = raw_device(args.device)
    on_dev = model.to(dev, getattr(torch, args.dtype))  # after the checkpoint was written from the CPU
    weight_bytes = sum(p.numel() * p.element_size() for p in on_dev.parameters())
    result: dict = {"config": config.to_dict(), "device": args.device, "raw_device": dev, "dtype": args.dtype,
                    "graphs": args.graphs, "weight_bytes": weight_bytes, "threads": torch.get_num_threads()}  # fmt: skip

    kcfg = KernelConfig(name=f"bench-generate-{os.getpid()}", runtime_dir=tmp, storage_dir=storage, log_level="error",
                        driver_options={"cuda": {"graphs": True}} if args.graphs else {})  # fmt: skip
    with boot.start(kcfg) as kp, Client(kp.address, name="bench-generate") as c:
        # no prefix caching: the rounds repeat their prompts, which the raw side computes every time
        handle = c.model_load(args.device, "tinygpt", checkpoint="bench.safetensors", kv_blocks=blocks, cache=False,
                              dtype=args.dtype).model  # fmt: skip
        raw = partial(_raw_generate, on_dev, torch.tensor(prompts[:1], device=dev), args.new)
        rounds, raw_out, done, batched_match = asyncio.run(generation_rounds(kp.address, c, handle, raw, prompts, args))
        best = {side: min(r[side] for r in rounds) for side in rounds[0]}
        ids = raw_out[0].tolist()
        result["outputs_match"] = done.text == ByteTokenizer().decode(ids[: ids.index(EOS)] if EOS in ids else ids)
        result["batched_outputs_match"] = batched_match
        tokens = args.procs * args.new
        result.update(
            raw_single_tok_s=round(args.new / best["raw"], 1),
            llmos_single_tok_s=round(args.new / best["single"], 1),
            single_stream_ratio=round(best["raw"] / best["single"], 3),
            single_stream_ratio_median=round(statistics.median(r["raw"] / r["single"] for r in rounds), 3),
            procs=args.procs,
            sequential_tok_s=round(tokens / best["one by one"], 1),
            concurrent_tok_s=round(tokens / best["at once"], 1),
            batching_speedup=round(best["one by one"] / best["at once"], 3),
            batching_speedup_median=round(statistics.median(r["one by one"] / r["at once"] for r in rounds), 3),
        )
        if args.peak_bw > 0:  # every token reads every weight once: bytes per token over seconds per token
            for side in ("raw", "llmos"):
                frac = weight_bytes * result[f"{side}_single_tok_s"] / (args.peak_bw * 1e9)
                result[f"{side}_roofline_frac"] = float(f"{frac:.4g}")

        _say("training steps")
        raw_step, llmos_step = _train(c, handle, on_dev, args)
        result.update(
            raw_train_step_ms=round(raw_step * 1e3, 2),
            llmos_train_step_ms=round(llmos_step * 1e3, 2),
            train_step_ratio=round(raw_step / llmos_step, 3),
        )
        c.model_free(handle)
    runtime.remove(kp.dir)
    print("\r" + " " * 80 + "\r", end="", file=sys.stderr, flush=True)
    return result


def _raw_generate(model, prompts, new: int):
    """`greedy_contiguous` on the model's device, its tokens copied back to the CPU: the copy waits for the
    device, so the raw side's clock stops when its work is done, as llmos's does."""
    from llmos.drivers.models.reference import greedy_contiguous

    return greedy_contiguous(model, prompts, new).cpu()


async def generation_rounds(address: str, c: Client, handle: int, raw, prompts: list[list[int]],
                            args: argparse.Namespace, say=None) -> tuple[list[dict[str, float]], object, object, bool]:  # fmt: skip
    """Each timed round's fastest seconds of each generation figure.

    Also returns raw's output, one llmos call's Completion, and whether the
    last round's requests wrote the same texts at once as one by one.

    Each round times the raw single stream and one generate call
    `--pairs` times, in pairs whose order alternates (the first of a pair
    runs on a machine that has just served the other process), then the
    `--procs` requests one after another, then the `--procs` processes at
    once. A slow spell of a shared machine then falls on every side alike
    instead of on whichever was being measured then. The first round warms up
    and is not counted. The processes attach and receive their handles before
    any clock starts, as the one-by-one side's process did: only the
    generating is timed. `say` shows progress (default: this benchmark's line).
    """
    say = say or _say
    clients = [AsyncClient(address, name=f"bench-proc{i}") for i in range(len(prompts))]
    for a in clients:
        await a.__aenter__()
    try:
        handles = [c.share(handle, a.pid) for a in clients]
        rounds: list[dict[str, float]] = []
        raw_out = done = None
        batched_match = False
        for round_ in range(args.repeats + 1):
            say(f"generation round {round_ + 1}/{args.repeats + 1}")
            seconds = {"raw": float("inf"), "single": float("inf")}
            for pair in range(args.pairs):
                for side in ("raw", "single") if pair % 2 else ("single", "raw"):
                    start = time.perf_counter()
                    if side == "raw":
                        raw_out = raw()
                    else:
                        done = c.generate(handle, prompts[0], max_tokens=args.new)
                    seconds[side] = min(seconds[side], time.perf_counter() - start)
            start = time.perf_counter()
            one_by_one = [c.generate(handle, p, max_tokens=args.new) for p in prompts]
            seconds["one by one"] = time.perf_counter() - start
            start = time.perf_counter()
            at_once = await asyncio.gather(
                *(a.generate(h, p, max_tokens=args.new) for a, h, p in zip(clients, handles, prompts))
            )
            seconds["at once"] = time.perf_counter() - start
            batched_match = [d.ids for d in one_by_one] == [d.ids for d in at_once]
            if round_ > 0:
                rounds.append(seconds)
        return rounds, raw_out, done, batched_match
    finally:
        for a in clients:
            await a.__aexit__(None, None, None)


def _train(c: Client, handle: int, model, args: argparse.Namespace) -> tuple[float, float]:
    """Median seconds of one training step in-process (on `model`'s device) and through llmos, on the same
    batches (`train_step` moves each to the device and reads its loss back, so a step's time is the device's)."""
    from llmos.drivers.models.tinygpt import TinyGPT
    from llmos.drivers.models.train import batches, make_optimizer, stdlib_corpus, train_step

    stream = batches(stdlib_corpus(1 << 20), args.batch, args.window, seed=0)
    data = [next(stream) for _ in range(args.steps + 1)]
    local = TinyGPT(model.config).to(model.tok_emb.weight.device, model.tok_emb.weight.dtype)
    local.load_state_dict(model.state_dict())
    opt = make_optimizer(local)
    raw, through = [], []
    for i, batch in enumerate(data):
        start = time.perf_counter()
        train_step(local, opt, batch)
        raw.append(time.perf_counter() - start)
        rows = batch.tolist()
        start = time.perf_counter()
        c.train_step(handle, rows)
        through.append(time.perf_counter() - start)
        _say(f"training step {i + 1}/{len(data)}")
    return statistics.median(raw[1:]), statistics.median(through[1:])


def report(r: dict) -> str:
    """A table for people."""
    return "\n".join(
        [
            f"tinygpt d_model {r['config']['d_model']}, {r['config']['n_layers']} layers on {r['device']}, raw side on "
            f"{r['raw_device']}, {r['dtype']}{', CUDA graphs' if r['graphs'] else ''} ({r['threads']} torch threads); "
            f"greedy texts match: {r['outputs_match']}, "
            f"batched texts match: {r['batched_outputs_match']}",
            f"single stream   raw {r['raw_single_tok_s']:8.1f} tok/s   llmos {r['llmos_single_tok_s']:8.1f} tok/s"
            f"   single_stream_ratio {r['single_stream_ratio']:.3f}  (target >= 0.85; median of rounds {r['single_stream_ratio_median']:.3f})",
            f"{r['procs']} processes     one by one {r['sequential_tok_s']:8.1f} tok/s   at once {r['concurrent_tok_s']:8.1f} tok/s"
            f"   batching_speedup {r['batching_speedup']:.3f}  (target >= 3; median of rounds {r['batching_speedup_median']:.3f})",
            f"training step   raw {r['raw_train_step_ms']:8.2f} ms   llmos {r['llmos_train_step_ms']:8.2f} ms"
            f"   train_step_ratio {r['train_step_ratio']:.3f}  (target >= 0.9)",
        ]
        + ([f"roofline        raw {r['raw_roofline_frac']:.4g}   llmos {r['llmos_roofline_frac']:.4g}   of the peak "
            f"bandwidth, reading {r['weight_bytes']} weight bytes a token"] if "llmos_roofline_frac" in r else [])
    )
