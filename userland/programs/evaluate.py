"""`llmos run eval`: how well a model predicts held-out text, as perplexity and bits per byte.

By default the text is the held-out last 10 % of the corpus `train` learns
from (the standard library's sources, or --corpus DIR; give the same
--corpus-bytes as to train); --text FILE scores a file instead. The text is
read in windows of --window tokens (default: the model's context), at most
--eval-windows of them spread evenly over it, each scored by one logprobs
syscall.
"""

import argparse
import sys

from ..client import Client
from .common import add_checkpoint, guarded, model_name, open_model, parser, print_result, show_args
from .corpus import add_corpus, model_corpus, model_text, read_corpus, read_text
from .perplexity import score


def main(argv: list[str]) -> int:
    """Parse the options, print them, and score."""
    p = parser("eval", __doc__)
    add_checkpoint(p, kv_blocks=1)
    add_corpus(p)
    p.add_argument("--text", metavar="FILE", default=None, help="score this file instead of the held-out corpus")
    p.add_argument("--window", type=int, default=None, help="tokens per window (default: the model's context)")
    p.add_argument("--eval-windows", type=int, default=32, help="windows to score at most (0: all)")
    args = p.parse_args(argv)
    if (args.window is not None and args.window < 2) or args.eval_windows < 0 or args.corpus_bytes < 1:
        p.error("--window must be at least 2, --corpus-bytes at least 1, --eval-windows not negative")
    show_args(args)
    return guarded("eval", lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> int:
    """Score the text with the model and report."""
    source = args.text or f"the held-out 10 % of {args.corpus or 'the standard library'}"
    with Client(name="eval") as c, open_model(c, args) as (model, info):
        byte_level = info.tokenizer in ("bytes", "")
        if byte_level:
            ids = read_text(args.text) if args.text else read_corpus(args)[1]
        else:  # the model's own tokens, from the kernel
            ids = model_text(c, model, args.text) if args.text else model_corpus(c, model, info.eos, args)[1]
        window = min(args.window or info.config["max_len"], info.config["max_len"])
        held = score(c, model, ids, window, args.eval_windows, bytes_tokens=byte_level)
    print(f"{source}: perplexity {held.perplexity:.3f}, {held.bits_per_byte:.3f} bits per byte "
          f"({held.windows} windows of {window} tokens, {held.tokens} tokens predicted)")  # fmt: skip
    print_result(
        perplexity=held.perplexity, bits_per_byte=held.bits_per_byte, tokens=held.tokens, windows=held.windows,
        window=window, checkpoint=model_name(args), text=args.text,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
