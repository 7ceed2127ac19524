"""Choosing the next token from logits.

Sampling is deterministic: each sequence owns a `torch.Generator` seeded from
its request's seed, so the same seed gives the same tokens whatever else is in
the batch. Temperature 0 is greedy (argmax, no randomness used). Otherwise
the logits are divided by the temperature, cut to the `top_k` most likely
tokens, then to the smallest set whose probability reaches `top_p` (nucleus),
and one token is drawn.

The settings (`SamplingParams`) and the cutting of text at stop strings
(`StopStream`) live in `decoding.py`, which needs no torch, so the kernel
can check a request's settings and stream its text without loading torch.
"""

from collections.abc import Sequence

import torch

from .decoding import SamplingParams


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch generator on `device` seeded with `seed`: one per sequence."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """`logits` [V] with every token outside the top-k and the top-p nucleus set to -inf."""
    logits = logits.clone()
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the tokens before it already reach top_p (the most likely one always stays)
        drop = (probs.cumsum(-1) - probs) >= top_p
        logits[order[drop]] = float("-inf")
    return logits


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None) -> int:
    """One token id from `logits` [V] under `params`; `generator` is needed unless greedy."""
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    if generator is None:
        raise ValueError("sampling with a temperature needs the sequence's generator")
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    return int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator))


def sample_batch(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """The next token of each sequence of a step: row `s` of `logits` [S, V] with `params[s]`, `generators[s]`.

    (A step whose sequences are all greedy needs none of this: one argmax over
    the batch does; the driver takes that path itself.)
    """
    return [sample(row, p, g) for row, p, g in zip(logits, params, generators)]
