"""The text the model programs learn from and are scored on, as byte-level token ids.

By default the corpus is the installed standard library's Python sources, read
at run time (nothing is downloaded; `stdlib_corpus`); `--corpus DIR` reads the
`.py` files under another folder the same way. `train` learns from the first
90 % and `eval` scores the held-out last 10 %, so both read the corpus with
the same options. `--text FILE` (eval) scores one file instead.

A model with a tokenizer of its own (one loaded from a Hugging Face-format
folder) reads the same files as text, tokenized by the kernel with that
tokenizer (`tokenize`), in pieces, files joined by its EOS id
(`model_corpus`, `model_text`).

`add_held_out` and `held_out` are what `eval` scores and `compress`
measures a model on before and after: the same text, windows and options.
"""

import argparse

import torch
from llmos.drivers.models.train import split_corpus, stdlib_corpus, stdlib_files

from llmos.syscalls import messages as m

from ..client import Client

HELD_OUT = 0.1
"""The fraction at the end of the corpus that training never sees."""
PIECE_CHARS = 1 << 16
"""Characters tokenized by one `tokenize` call (well under the kernel's 1 MiB request header)."""


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


def tokenized(c: Client, model: int, text: str) -> list[int]:
    """The model's token ids of `text`, tokenized by the kernel a piece at a time."""
    ids: list[int] = []
    for start in range(0, len(text), PIECE_CHARS):
        ids += c.tokenize(model, text[start : start + PIECE_CHARS])
    return ids


def model_corpus(c: Client, model: int, eos: list[int], args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(training ids, held-out ids) of the corpus in the model's own tokens: at most --corpus-bytes bytes
    of text, files joined by the first of `eos` (if the tokenizer has one)."""
    ids: list[int] = []
    left = args.corpus_bytes
    for path in stdlib_files(args.corpus):
        with open(path, "rb") as fh:
            data = fh.read(left)
        left -= len(data)
        ids += tokenized(c, model, data.decode("utf-8", "replace")) + eos[:1]
        if left <= 0:
            break
    if not ids:
        raise FileNotFoundError(f"no Python sources found under {args.corpus or 'the standard library'}")
    return split_corpus(torch.tensor(ids, dtype=torch.long), HELD_OUT)


def model_text(c: Client, model: int, path: str) -> torch.Tensor:
    """A file's text in the model's own tokens."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return torch.tensor(tokenized(c, model, f.read()), dtype=torch.long)


def add_held_out(p: argparse.ArgumentParser) -> None:
    """The options of the held-out text a model is scored on: the corpus options, --text, --window, --eval-windows."""
    add_corpus(p)
    p.add_argument("--text", metavar="FILE", default=None, help="score this file instead of the held-out corpus")
    p.add_argument("--window", type=int, default=None, help="tokens per window (default: the model's context)")
    p.add_argument("--eval-windows", type=int, default=32, help="windows to score at most (0: all)")


def check_held_out(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for held-out options out of range."""
    if (args.window is not None and args.window < 2) or args.eval_windows < 0 or args.corpus_bytes < 1:
        p.error("--window must be at least 2, --corpus-bytes at least 1, --eval-windows not negative")


def held_out(c: Client, model: int, info: m.ModelInfo, args: argparse.Namespace) -> tuple[torch.Tensor, int, bool]:
    """(token ids, window, byte-level?) of the held-out text the options name, for the model `info` describes:
    --text FILE or the corpus's held-out last 10 %, in the model's own tokens when it has a tokenizer of its own."""
    byte_level = info.tokenizer in ("bytes", "")
    if byte_level:
        ids = read_text(args.text) if args.text else read_corpus(args)[1]
    else:  # the model's own tokens, from the kernel
        ids = model_text(c, model, args.text) if args.text else model_corpus(c, model, info.eos, args)[1]
    window = min(args.window or info.config["max_len"], info.config["max_len"])
    return ids, window, byte_level
