"""`llmos run compress`: quantize or prune a model, and see what it gives back and what it costs.

Loads the --checkpoint (or the --model-dir folder), then one syscall
compresses it in place: --scheme int8 (weights as int8, a scale per output
channel), int4 (4-bit weights, a scale per --group-size of them), pruneNN
(the NN % smallest weights of each matrix set to zero) or prune2:4 (2 of
every 4). The kernel measures the model before and after on the held-out
text `eval` scores (same corpus, windows and options): perplexity, the bytes
its weights hold, and greedy decode tokens/s. The program prints them side
by side with the memory this process holds on the device before and after
(the memory the model gave back is free for others at once), and saves the
compressed model as an llmos checkpoint (--out) that `generate`, `chat` and
`eval` load like any other. --hold S keeps the compressed model loaded S
seconds before exiting, to look at it with `llmos mem`.
"""

import argparse
import re
import sys
import time
from typing import NamedTuple, TextIO

from llmos.syscalls import messages as m

from ..client import Client
from .common import add_checkpoint, guarded, model_name, open_model, parser, print_result, show_args
from .corpus import add_held_out, check_held_out, held_out
from .perplexity import windows_of
from .progress import Ticker


class Scheme(NamedTuple):
    """A --scheme: its name, the syscall it makes ("quantize" or "prune") and that call's arguments."""

    name: str
    call: str
    options: dict

    def __str__(self) -> str:
        return self.name


def scheme(text: str) -> Scheme:
    """The --scheme `text` names; ArgumentTypeError for one it does not know."""
    if text in ("int8", "int4"):
        return Scheme(text, "quantize", {"scheme": text})
    if text == "prune2:4":
        return Scheme(text, "prune", {"sparsity": 0.5, "pattern": "2:4"})
    found = re.fullmatch(r"prune(\d{1,2})", text)
    if found:
        return Scheme(text, "prune", {"sparsity": int(found.group(1)) / 100, "pattern": "unstructured"})
    raise argparse.ArgumentTypeError(f"{text!r}: int8, int4, pruneNN (NN percent, 0-99) or prune2:4")


def ratios(done: m.Compressed) -> dict:
    """The after/before ratios of a compression's report: bytes_ratio, ppl_ratio (0 without perplexity), tok_s_ratio."""
    ppl = done.perplexity_after / done.perplexity_before if done.perplexity_before else 0.0
    return {"bytes_ratio": done.bytes_after / done.bytes_before, "ppl_ratio": ppl,
            "tok_s_ratio": done.tok_s_after / done.tok_s_before}  # fmt: skip


def compress(c: Client, model: int, how: Scheme, windows: list[list[int]], out: TextIO | None = None) -> m.Compressed:
    """One model_quantize or model_prune call, with a line on `out` (stdout) that shows it running."""
    with Ticker(f"{how.name}: compressing, measuring on {len(windows)} held-out windows before and after", out):
        if how.call == "quantize":
            return c.model_quantize(model, windows=windows, **how.options)
        return c.model_prune(model, windows=windows, **how.options)


def main(argv: list[str]) -> int:
    """Parse the options, print them, and compress."""
    p = parser("compress", __doc__)
    add_checkpoint(p, kv_blocks=4)
    p.add_argument("--scheme", type=scheme, required=True, metavar="SCHEME",
                   help="int8, int4, pruneNN (NN percent of each matrix, unstructured) or prune2:4")  # fmt: skip
    p.add_argument("--group-size", type=int, default=0, help="int4: weights per scale (0: the kernel's, 32)")
    p.add_argument("--out", default=None, help="checkpoint to write under the kernel's storage "
                                               "(default: the model's name with the scheme, e.g. tinygpt-int8.safetensors)")  # fmt: skip
    p.add_argument("--hold", type=float, default=0.0, help="keep the compressed model loaded this many seconds")
    add_held_out(p)
    args = p.parse_args(argv)
    check_held_out(p, args)
    if args.group_size:
        if args.scheme.name != "int4":
            p.error("--group-size is int4's")
        args.scheme.options["group_size"] = args.group_size
    if args.hold < 0:
        p.error("--hold cannot be negative")
    if args.out is None:
        stem = re.sub(r"\.safetensors$", "", model_name(args).rstrip("/").rsplit("/", 1)[-1])
        args.out = f"{stem}-{args.scheme.name.replace(':', '-')}.safetensors"
    show_args(args)
    return guarded("compress", lambda: run(args))


def held_by_me(c: Client, device: str) -> int:
    """The bytes this process is charged for on `device`."""
    return next(d.by_process.get(c.pid, 0) for d in c.memstat() if d.device == device)


def run(args: argparse.Namespace) -> int:
    """Load, compress, report, save."""
    with Client(name="compress") as c, open_model(c, args) as (model, info):
        ids, window, _ = held_out(c, model, info, args)
        windows = windows_of(ids, window, args.eval_windows)
        held_before = held_by_me(c, info.device)
        done = compress(c, model, args.scheme, windows)
        held_after = held_by_me(c, info.device)
        c.model_save(model, args.out, format="llmos")
        report(done, info, window)
        print(f"memory: this process holds {mib(held_before)} on {info.device} before, {mib(held_after)} after: "
              f"{mib(held_before - held_after)} back to the device for anyone")  # fmt: skip
        print(f"saved: {args.out} (under the kernel's storage directory; load it with --checkpoint {args.out})")
        print_result(compression=done.compression, checkpoint=model_name(args), out=args.out, sparsity=done.sparsity,
                     bytes_before=done.bytes_before, bytes_after=done.bytes_after, charged_before=done.charged_before,
                     charged_after=done.charged_after, perplexity_before=done.perplexity_before,
                     perplexity_after=done.perplexity_after, tok_s_before=done.tok_s_before,
                     tok_s_after=done.tok_s_after, **ratios(done))  # fmt: skip
        if args.hold:
            print(f"holding the compressed model for {args.hold:g} s (see `llmos mem`)", flush=True)
            time.sleep(args.hold)
    return 0


def mib(n: int) -> str:
    """Bytes in MiB, for the report."""
    return f"{n / 2**20:.2f} MiB"


def report(done: m.Compressed, info: m.ModelInfo, window: int) -> None:
    """The before / after table."""
    r = ratios(done)
    rows = [
        ("weights", mib(done.bytes_before), mib(done.bytes_after), f"{r['bytes_ratio']:.3f}"),
        ("charged (with KV)", mib(done.charged_before), mib(done.charged_after),
         f"{done.charged_after / done.charged_before:.3f}"),
        (f"perplexity ({window}-token windows)", f"{done.perplexity_before:.4f}", f"{done.perplexity_after:.4f}",
         f"{r['ppl_ratio']:.4f}"),
        ("decode tokens/s", f"{done.tok_s_before:,.0f}", f"{done.tok_s_after:,.0f}", f"{r['tok_s_ratio']:.2f}"),
        ("zero weights", "", f"{100 * done.sparsity:.1f} %", ""),
    ]  # fmt: skip
    print(f"{info.arch} on {info.device}: {done.layers} matrices are now {done.compression} "
          f"({done.device_s:.1f} s on the device, measuring included)")  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print(f"{'':{width}}  {'before':>12}  {'after':>12}  {'after/before':>12}")
    for label, before, after, ratio in rows:
        print(f"{label:{width}}  {before:>12}  {after:>12}  {ratio:>12}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
