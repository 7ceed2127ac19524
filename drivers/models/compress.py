"""The driver side of model_quantize and model_prune: change a loaded model, measured before and after.

`compress` measures the model, applies the change (quantize.py,
prune.py), and measures it again, in one go on the device:
- bytes: what the weights really hold (parameters and buffers: codes,
  scales, kept weights, masks), `held_bytes`;
- held-out perplexity over the caller's windows, scored as the eval
  program scores them (every token after the first of a window, given the
  ones before it);
- decode tokens per second: greedy generation of one sequence through the
  model's own paged step (`reference.greedy_paged`, on a scratch KV cache of
  a few blocks), the best of a few runs;
- sparsity: the fraction of the changed matrices' weights that are zero,
  counted on the weights as they are used (dense, dequantized), not assumed.

`layout_of` and `restore` carry a compressed model through a checkpoint:
the layout (layer name -> spec, compression.py) goes in its metadata, and a
loader puts empty compressed modules of those specs in place before reading
the tensors.
"""

import itertools
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmos.syscalls.driver import CompressOut

from .compression import describe, replace_module
from .prune import SparseLinear
from .quantize import Quantized, quantized_module
from .reference import greedy_paged

DECODE_PROMPT = 16
"""Prompt tokens of the timed generation (the start of the caller's first window, or one zero)."""
DECODE_TOKENS = 32
"""Tokens generated per timed run."""
DECODE_RUNS = 5
"""Timed runs; the fastest counts, so a slow spell of a shared machine falls on neither side alone."""
KV_BLOCK = 16
"""Positions per block of the scratch KV cache."""
EVAL_BATCH = 8
"""Windows scored per forward."""


def held_bytes(model: nn.Module) -> int:
    """The bytes a model's weights hold: its parameters and buffers, each tensor once."""
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def layout_of(model: nn.Module) -> dict[str, dict]:
    """The model's compressed matrices: layer name -> spec (empty for a model as built)."""
    return {name: mod.spec() for name, mod in model.named_modules() if isinstance(mod, (Quantized, SparseLinear))}


def restore(model: nn.Module, layout: dict[str, dict]) -> None:
    """Put empty compressed modules of `layout`'s specs in place of the float layers they replaced, so that the
    model's `load_state_dict` can read a compressed checkpoint (ValueError for a layout that does not fit it)."""
    for name, spec in layout.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no layer {name!r} to compress") from None
        bias, w = getattr(old, "bias", None) is not None, old.weight
        try:
            new = (SparseLinear.empty(spec, bias, w.dtype, w.device) if spec["kind"] == "sparse"
                   else quantized_module(name, spec, bias, w.dtype, w.device))  # fmt: skip
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{name}: bad compression spec {spec}: {exc!r}") from None
        replace_module(model, name, new)


def _device(model: nn.Module) -> torch.device:
    """Where the model's tensors are."""
    return next(itertools.chain(model.parameters(), model.buffers())).device


@torch.no_grad()
def perplexity(model: nn.Module, windows: Sequence[Sequence[int]]) -> float:
    """exp(mean surprise) of every token after the first of each window, given the ones before it (0.0: no windows)."""
    if not windows:
        return 0.0
    nats, predicted = 0.0, 0
    ordered = sorted(windows, key=len)  # windows of one length go through the model together
    for _, same in itertools.groupby(ordered, key=len):
        same = list(same)
        for start in range(0, len(same), EVAL_BATCH):
            ids = torch.tensor(same[start : start + EVAL_BATCH], dtype=torch.long, device=_device(model))
            logp = F.log_softmax(model(ids[:, :-1]).double(), dim=-1)
            nats -= logp.gather(-1, ids[:, 1:, None]).sum().item()
            predicted += ids[:, 1:].numel()
    return math.exp(nats / predicted)


def decode_rate(model: nn.Module, prompt: Sequence[int]) -> float:
    """Greedy tokens per second of one sequence through the model's paged step (`greedy_paged`, its prefill
    step included), the best of `DECODE_RUNS` runs."""
    max_len = model.config.max_len
    prompt = list(prompt[: min(DECODE_PROMPT, max_len // 2)]) or [0]
    count = min(DECODE_TOKENS, max_len - len(prompt))
    best = math.inf
    for _ in range(DECODE_RUNS):
        start = time.perf_counter()
        greedy_paged(model, [prompt], count, block_size=KV_BLOCK)
        best = min(best, time.perf_counter() - start)
    return count / best


@torch.no_grad()
def zero_fraction(model: nn.Module, names: Sequence[str]) -> float:
    """The fraction of the named compressed matrices' weights that are zero, as they are used."""
    zeros, total = 0, 0
    for name in names:
        w = model.get_submodule(name).dense()
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / total if total else 0.0


def compress(model: nn.Module, change: Callable[[nn.Module], dict], windows: Sequence[Sequence[int]]) -> CompressOut:
    """Measure `model`, apply `change` (it compresses the model in place and returns the layout), measure again."""
    prompt = windows[0] if windows else []
    bytes_before, ppl_before, rate_before = held_bytes(model), perplexity(model, windows), decode_rate(model, prompt)
    layout = change(model)
    return CompressOut(
        compression=describe(layout_of(model)), layers=len(layout), sparsity=zero_fraction(model, list(layout)),
        bytes_before=bytes_before, bytes_after=held_bytes(model), perplexity_before=ppl_before,
        perplexity_after=perplexity(model, windows), tok_s_before=rate_before, tok_s_after=decode_rate(model, prompt),
    )  # fmt: skip
