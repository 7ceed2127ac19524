"""Compression: what quantizing and pruning a trained tinygpt gives back in memory and costs in quality and speed.

One run, one kernel. The model is the demo's: the train program with the
demo's options (`--steps` 800, seed 0: tinygpt, d_model 128, 4 layers, a
128-token context, on the standard library's sources), spawned by the
kernel with its progress relayed; or `--checkpoint FILE`, any llmos
checkpoint of a trained model. For each scheme (`--schemes`, default int8,
int4 in groups of 32, prune50 unstructured, prune2:4) a fresh copy is
loaded and compressed by one syscall, which measures it before and after on
the held-out text `llmos run eval` scores (the last 10 % of the corpus,
`--eval-windows` windows of the model's context):
  bytes_ratio  bytes its weights hold after / before (codes, scales, masks counted)
  ppl_ratio    held-out perplexity after / before
  tok_s_ratio  greedy decode tokens/s of one sequence after / before
Targets (issue 17): int8 bytes_ratio <= 0.30 with ppl_ratio <= 1.02; int4
bytes_ratio <= 0.20 with ppl_ratio <= 1.10; pruning is reported as measured.
"""

import argparse
import os
import shutil
import sys
import tempfile
from types import SimpleNamespace

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.userland.client import Client

MODEL = "model.safetensors"
TARGETS = {"int8": {"bytes_ratio": 0.30, "ppl_ratio": 1.02}, "int4": {"bytes_ratio": 0.20, "ppl_ratio": 1.10}}
"""The issue's targets, per scheme: each ratio at most this."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench compress`."""
    parser.add_argument("--device", default="cpu", help="device (default: cpu)")
    parser.add_argument("--checkpoint", metavar="FILE", help="an llmos checkpoint of a trained model (default: train "
                                                             "the demo's model first)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=800, help="training steps without --checkpoint (default 800, the demo's)")
    parser.add_argument("--schemes", default="int8,int4,prune50,prune2:4",
                        help="comma-separated `llmos run compress` schemes (default int8,int4,prune50,prune2:4)")  # fmt: skip
    parser.add_argument("--eval-windows", type=int, default=32, help="held-out windows (default 32, eval's)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the cpu driver host (default 1: a small model's decode steps time "
                             "steadily on a busy machine; 0: torch's choice)")  # fmt: skip


def _say(text: str) -> None:
    print(f"[bench compress] {text}", file=sys.stderr, flush=True)


def _relay(text: str) -> None:
    """The training program's output on stderr (stdout may be --json), less its ARG and RESULT lines."""
    for line in text.splitlines(keepends=True):
        if not line.startswith(("ARG ", "RESULT ")):
            sys.stderr.write("    " + line)
    sys.stderr.flush()


def _model(c: Client, args: argparse.Namespace, storage: str) -> str:
    """Put the model to compress in the kernel's storage: copy --checkpoint, or train the demo's; say where it came from."""
    if args.checkpoint:
        shutil.copyfile(args.checkpoint, os.path.join(storage, MODEL))
        return os.path.abspath(args.checkpoint)
    opts = ["--device", args.device, "--steps", str(args.steps), "--seed", "0", "--out", MODEL]
    _say(f"$ llmos run train {' '.join(opts)}  (the demo's model)")
    child = c.spawn("train", opts)
    if c.wait(child.pid, on_output=_relay).status != 0:
        raise SystemExit("llmos bench compress: training failed")
    return f"trained here: llmos run train {' '.join(opts)}"


def run(args: argparse.Namespace) -> dict:
    """Boot a kernel, get the model, compress a fresh copy of it per scheme, shut down."""
    from llmos.userland.programs.compress import compress, ratios, scheme
    from llmos.userland.programs.corpus import read_corpus
    from llmos.userland.programs.perplexity import windows_of

    try:
        schemes = [scheme(name) for name in args.schemes.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise SystemExit(f"llmos bench compress: --schemes: {exc}") from None
    if args.steps < 1 or args.eval_windows < 1 or args.threads < 0:
        raise SystemExit("llmos bench compress: --steps and --eval-windows must be at least 1, --threads at least 0")
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    storage = os.path.join(tmp, "storage")
    os.makedirs(storage)
    threads = {"cpu": {"threads": args.threads}} if args.threads else {}
    kcfg = KernelConfig(name=f"bench-compress-{os.getpid()}", runtime_dir=tmp, storage_dir=storage, log_level="error",
                        driver_options=threads)  # fmt: skip
    rows = {}
    try:
        with boot.start(kcfg) as kp, Client(kp.address, name="bench-compress") as c:
            source = _model(c, args, storage)
            held_out = read_corpus(SimpleNamespace(corpus=None, corpus_bytes=4 << 20))[1]
            for i, how in enumerate(schemes, 1):
                info = c.model_load(args.device, checkpoint=MODEL, kv_blocks=4)
                windows = windows_of(held_out, info.config["max_len"], args.eval_windows)
                _say(f"{i}/{len(schemes)} {how.name} on a fresh copy ({info.params:,} parameters, step {info.step})")
                done = compress(c, info.model, how, windows, out=sys.stderr)
                c.model_free(info.model)
                rows[how.name] = {**ratios(done), "compression": done.compression, "bytes_before": done.bytes_before,
                                  "bytes_after": done.bytes_after, "perplexity_before": done.perplexity_before,
                                  "perplexity_after": done.perplexity_after, "tok_s_before": done.tok_s_before,
                                  "tok_s_after": done.tok_s_after, "sparsity": done.sparsity}  # fmt: skip
    finally:  # the kernel's runtime folder is in here too
        shutil.rmtree(tmp, ignore_errors=True)
    met = {name: all(rows[name][k] <= v for k, v in want.items()) for name, want in TARGETS.items() if name in rows}
    return {"device": args.device, "threads": args.threads, "model": source, "params": info.params, "config": info.config,
            "eval_windows": len(windows), "window": info.config["max_len"], "schemes": rows, "targets": TARGETS,
            "targets_met": met}  # fmt: skip


def report(r: dict) -> str:
    """The figures as a table."""
    lines = [f"model: {r['model']} ({r['params']:,} parameters), held-out perplexity over {r['eval_windows']} "
             f"windows of {r['window']} tokens, on {r['device']} ({r['threads'] or 'default'} torch threads)",
             f"{'scheme':10} {'bytes_ratio':>11} {'ppl_ratio':>10} {'tok_s_ratio':>11} {'ppl before':>10} "
             f"{'ppl after':>10} {'zero weights':>12}"]  # fmt: skip
    for name, s in r["schemes"].items():
        lines.append(f"{name:10} {s['bytes_ratio']:11.3f} {s['ppl_ratio']:10.4f} {s['tok_s_ratio']:11.2f} "
                     f"{s['perplexity_before']:10.3f} {s['perplexity_after']:10.3f} {100 * s['sparsity']:11.1f}%")  # fmt: skip
    for name, ok in r["targets_met"].items():
        want = ", ".join(f"{k} <= {v}" for k, v in r["targets"][name].items())
        lines.append(f"target {name}: {want}: {'met' if ok else 'NOT met'}")
    return "\n".join(lines)
