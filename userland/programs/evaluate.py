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
from .corpus import add_held_out, check_held_out, held_out
from .perplexity import score


def main(argv: list[str]) -> int:
    """Parse the options, print them, and score."""
    p = parser("eval", __doc__)
    add_checkpoint(p, kv_blocks=1)
    add_held_out(p)
    args = p.parse_args(argv)
    check_held_out(p, args)
    show_args(args)
    return guarded("eval", lambda: evaluate(args))


def evaluate(args: argparse.Namespace) -> int:
    """Score the text with the model and report."""
    source = args.text or f"the held-out 10 % of {args.corpus or 'the standard library'}"
    with Client(name="eval") as c, open_model(c, args) as (model, info):
        ids, window, byte_level = held_out(c, model, info, args)
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
