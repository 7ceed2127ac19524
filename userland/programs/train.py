"""`llmos run train`: train tinygpt, or fine-tune a model folder, through the train_step syscall.

Reads the corpus (the standard library's Python sources by default, or
--corpus DIR), loads a fresh model (or, with --resume, the --out checkpoint
where it stopped; or, with --model-dir NAME, a Hugging Face-format folder
under the kernel's models directory, whose own tokenizer then reads the
corpus, through the kernel, and which is saved at --out as a folder in the
same layout), and sends one seeded batch of windows per train_step call
until --steps or --minutes is reached, whichever comes first. The learning
rate warms up linearly for --warmup steps, then follows a cosine down to a
tenth of --lr. A --device list (`cpu0,node2/cpu0`) loads one replica on each
device and trains data parallel: the kernel splits each batch between them
and the replicas all-reduce their gradients (docs/distributed.md). It saves the checkpoint every --every steps and at the end,
then scores the held-out last 10 % of the corpus with the logprobs syscall.

The batch stream is seeded, and a resumed run skips the batches the
checkpoint's step count already used, so stopping and resuming with the same
options trains on exactly the batches one long run would have.
"""

import argparse
import math
import sys
import time

from llmos.drivers.models.train import batches
from llmos.syscalls import Errno

from ..client import Client
from ..errors import LlmosError
from .common import (
    ARCH,
    DEFAULT_CHECKPOINT,
    ProgramError,
    add_model_size,
    guarded,
    model_config,
    parser,
    print_result,
    show_args,
)
from .corpus import add_corpus, model_corpus, read_corpus
from .perplexity import score
from .progress import Progress, clock

DEFAULT_STEPS = 500
"""How many steps a run takes when neither --steps nor --minutes is given."""
MIN_LR = 0.1
"""Where the cosine ends, as a fraction of --lr."""
KV_BLOCKS = 4
"""Training never generates, so the model gets a small KV cache."""


def learning_rate(base: float, warmup: int, step: int, fraction: float) -> float:
    """The learning rate of step `step`: linear warm-up for `warmup` steps, then a cosine over the run's fraction."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (MIN_LR + (1 - MIN_LR) * 0.5 * (1 + math.cos(math.pi * fraction)))


def main(argv: list[str]) -> int:
    """Parse the options, print them, and train."""
    p = parser("train", __doc__, devices="; or a list, cpu0,node2/cpu0: one replica on each, trained data parallel")
    add_corpus(p)
    p.add_argument("--steps", type=int, help=f"stop at step N (default: {DEFAULT_STEPS} without --minutes)")
    p.add_argument("--minutes", type=float, help="stop after M minutes of training")
    p.add_argument("--batch", type=int, default=16, help="windows per step")
    p.add_argument("--window", type=int, default=128, help="tokens per window, and the context of a fresh model")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=20, help="steps of linear learning-rate warm-up")
    add_model_size(p)
    p.add_argument("--model-dir", metavar="NAME", default=None,
                   help="fine-tune this Hugging Face-format folder under the kernel's models directory instead")  # fmt: skip
    p.add_argument("--out", default=None,
                   help=f"checkpoint to write, under the kernel's storage (default: {DEFAULT_CHECKPOINT}; "
                        "with --model-dir, NAME-tuned, a folder)")  # fmt: skip
    p.add_argument("--every", type=int, default=0, help="also save the checkpoint every K steps (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the --out checkpoint if it exists")
    p.add_argument("--eval-windows", type=int, default=32, help="held-out windows to score at the end (0: all)")
    args = p.parse_args(argv)
    if args.steps is None and args.minutes is None:
        args.steps = DEFAULT_STEPS
    if (args.steps is not None and args.steps < 1) or (args.minutes is not None and not args.minutes > 0):
        p.error("--steps must be at least 1 and --minutes above 0")
    if min(args.batch, args.window - 1, args.corpus_bytes) < 1 or not args.lr > 0:
        p.error("--batch and --corpus-bytes must be at least 1, --window at least 2, --lr above 0")
    if min(args.warmup, args.every, args.eval_windows) < 0:
        p.error("--warmup, --every and --eval-windows cannot be negative")
    if args.model_dir and args.resume:
        p.error("--resume continues an llmos checkpoint; a fine-tuned folder (--model-dir) keeps no optimizer state")
    if args.out is None:
        args.out = f"{args.model_dir.rstrip('/').rsplit('/', 1)[-1]}-tuned" if args.model_dir else DEFAULT_CHECKPOINT
    show_args(args)
    return guarded("train", lambda: train(args))


def placement(device: str) -> dict:
    """model_load's arguments for --device: `device`, or `devices` for a comma-separated list (replicas)."""
    names = [name.strip() for name in device.split(",")]
    return {"devices": names} if len(names) > 1 else {"device": device}


def load_model(c: Client, args: argparse.Namespace):
    """The model to train: the --out checkpoint with --resume if it is there, else a fresh one from --seed."""
    if args.resume:
        try:
            info = c.model_load(arch=ARCH, checkpoint=args.out, kv_blocks=KV_BLOCKS, **placement(args.device))
            print(f"resuming {args.out} at step {info.step}", flush=True)
            return info
        except LlmosError as exc:
            if exc.errno != Errno.EINVAL:
                raise
            print(f"nothing to resume ({exc.message}): starting fresh", flush=True)
    config = model_config(args, max_len=args.window)
    return c.model_load(arch=ARCH, config=config, kv_blocks=KV_BLOCKS, seed=args.seed, **placement(args.device))


def train(args: argparse.Namespace) -> int:
    """Train, save, score the held-out text, and report."""
    with Client(name="train") as c:
        if args.model_dir:
            info = c.model_load(path=args.model_dir, kv_blocks=KV_BLOCKS, **placement(args.device))
            train_ids, held_out = model_corpus(c, info.model, info.eos, args)
        else:
            train_ids, held_out = read_corpus(args)
            info = load_model(c, args)
        if len(train_ids) <= args.window:
            raise ProgramError(f"the corpus has {len(train_ids)} training tokens, not one window of {args.window + 1}")
        where = info.device if len(info.devices) < 2 else f"{', '.join(info.devices)} (data parallel)"
        print(f"model: {info.params:,} parameters on {where}, config {info.config}", flush=True)
        stream = batches(train_ids, args.batch, args.window, args.seed)
        for _ in range(info.step):  # a resumed run skips the batches already used
            next(stream)
        seconds = None if args.minutes is None else args.minutes * 60
        progress = Progress(args.steps, seconds, info.step, args.batch * args.window)
        step, first_loss, last_loss = info.step, None, None
        saved = info.step or None  # a fresh model is saved even if no step ran
        try:
            while not (args.steps and step >= args.steps) and not (seconds and progress.elapsed() >= seconds):
                lr = learning_rate(args.lr, args.warmup, step, progress.fraction())
                result = c.train_step(info.model, next(stream).tolist(), lr=lr)
                step, last_loss = result.step, result.loss
                first_loss = last_loss if first_loss is None else first_loss
                progress.update(step, last_loss)
                if args.every and step % args.every == 0:
                    c.model_save(info.model, args.out)
                    saved = step
        finally:
            progress.close()
        if saved != step:
            c.model_save(info.model, args.out)
        elapsed, tokens_per_s = progress.elapsed(), progress.tokens_per_s()
        started = time.monotonic()
        held = score(c, info.model, held_out, args.window, args.eval_windows, bytes_tokens=not args.model_dir)
        c.model_free(info.model)
    if first_loss is None:
        print(f"the model had taken {step} steps already: nothing to train")
    else:
        print(f"trained steps {info.step} -> {step} in {clock(elapsed)} ({tokens_per_s:,.0f} tokens/s); "
              f"loss {first_loss:.3f} -> {last_loss:.3f}")  # fmt: skip
    print(f"held-out perplexity {held.perplexity:.2f} ({held.bits_per_byte:.3f} bits per byte) over {held.windows} "
          f"windows, {held.tokens} tokens, in {time.monotonic() - started:.1f} s")  # fmt: skip
    print(f"checkpoint: {args.out} (under the kernel's storage directory)")
    print_result(
        steps=step, start_step=info.step, first_loss=first_loss, last_loss=last_loss, perplexity=held.perplexity,
        bits_per_byte=held.bits_per_byte, checkpoint=args.out, tokens_per_s=tokens_per_s, seconds=elapsed,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
