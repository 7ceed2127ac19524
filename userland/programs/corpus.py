"""The text the model programs learn from and are scored on, as byte-level token ids.

By default the corpus is the installed standard library's Python sources, read
at run time (nothing is downloaded; `stdlib_corpus`); `--corpus DIR` reads the
`.py` files under another folder the same way. `train` learns from the first
90 % and `eval` scores the held-out last 10 %, so both read the corpus with
the same options. `--text FILE` (eval) scores one file instead.
"""

import argparse

import torch
from llmos.drivers.models.train import split_corpus, stdlib_corpus

HELD_OUT = 0.1
"""The fraction at the end of the corpus that training never sees."""


def add_corpus(p: argparse.ArgumentParser) -> None:
    """--corpus DIR and --corpus-bytes N: which text, and how much of it."""
    p.add_argument("--corpus", metavar="DIR", help="the .py files under DIR (default: the standard library)")
    p.add_argument("--corpus-bytes", type=int, default=4 << 20, help="read at most this many bytes")


def read_corpus(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(training ids, held-out ids) of the corpus the options name."""
    return split_corpus(stdlib_corpus(args.corpus_bytes, root=args.corpus), HELD_OUT)


def read_text(path: str) -> torch.Tensor:
    """The token ids of a file: its bytes, as the byte-level tokenizer reads text."""
    with open(path, "rb") as f:
        return torch.tensor(list(f.read()), dtype=torch.long)
