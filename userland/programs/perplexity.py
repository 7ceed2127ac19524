"""Held-out perplexity through the `logprobs` syscall, over a bounded number of windows.

A window of W tokens gives W - 1 predictions (every token after the first,
given the ones before it). The windows are non-overlapping and spread evenly
over the text, and at most `max_windows` are scored, so a score stays quick
however long the text is. Bits per byte is the total surprise in bits over
the bytes of text predicted: with the byte tokenizer each token below 256 is
one byte (the EOS between files is none); with a model's own tokenizer the
kernel turns the predicted tokens back into text (`detokenize`) to count
its UTF-8 bytes. So models with different tokenizers compare in bits per
byte, not in perplexity.
"""

import math
from typing import NamedTuple

import torch

from ..client import Client
from .common import ProgramError


class Score(NamedTuple):
    """How well a model predicts a text: perplexity, bits per byte, tokens predicted, windows read."""

    perplexity: float
    bits_per_byte: float
    tokens: int
    windows: int


def window_starts(length: int, window: int, max_windows: int) -> list[int]:
    """Starts of at most `max_windows` (0: all) non-overlapping windows of `window` tokens, evenly spread."""
    count = length // window
    if max_windows and count > max_windows:
        return [(i * count // max_windows) * window for i in range(max_windows)]
    return [i * window for i in range(count)]


def windows_of(ids: torch.Tensor, window: int, max_windows: int) -> list[list[int]]:
    """The token windows a score reads: `window_starts`' windows of `window` tokens (the whole text if it is shorter)."""
    window = min(window, len(ids))
    return [ids[start : start + window].tolist() for start in window_starts(len(ids), window, max_windows)]


def score(c: Client, model: int, ids: torch.Tensor, window: int, max_windows: int, bytes_tokens: bool = True) -> Score:
    """Score `ids` with the model: windows of `window` tokens (the whole text if it is shorter than one).

    `bytes_tokens`: the ids are the byte tokenizer's; else they are the model's own, counted in bytes
    through `detokenize`."""
    if len(ids) < 2:
        raise ProgramError(f"a text of {len(ids)} tokens has nothing to predict; give at least 2")
    nats, predicted, byte_tokens = 0.0, 0, 0
    pieces = windows_of(ids, window, max_windows)
    for piece in pieces:
        nats -= sum(c.logprobs(model, piece))
        predicted += len(piece) - 1
        if bytes_tokens:
            byte_tokens += sum(1 for t in piece[1:] if t < 256)
        else:
            byte_tokens += len(c.detokenize(model, piece[1:]).encode("utf-8"))
    return Score(math.exp(nats / predicted), nats / math.log(2) / max(byte_tokens, 1), predicted, len(pieces))
