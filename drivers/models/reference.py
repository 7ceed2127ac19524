"""Greedy generation loops outside llmos: the plain-torch baseline and a minimal paged loop.

`greedy_contiguous` is the baseline the benchmarks compare llmos against: the
same model in-process with a plain contiguous KV cache, one tensor per
batch, no block tables. `greedy_paged` drives `TinyGPT.step` the simplest way
(every sequence gets its own consecutive block ids up front, one prefill
step, then batched decode steps); it measures the cost of the paged step by
itself, without the kernel or the scheduler.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .paged import PagedLM
from .tinygpt import TinyGPT


@torch.inference_mode()
def greedy_contiguous(model: TinyGPT, prompts: torch.Tensor, max_new: int) -> torch.Tensor:
    """Greedy continuation [B, max_new] of equal-length `prompts` [B, P] with a contiguous KV cache."""
    model.eval()
    cfg = model.config
    B, P = prompts.shape
    total = P + max_new - 1  # the last generated token is never fed back
    if total > cfg.max_len:
        raise ValueError(f"{total} positions exceed max_len {cfg.max_len}")
    w = model.tok_emb.weight
    cache = torch.zeros(cfg.n_layers, 2, B, cfg.n_heads, total, cfg.head_dim, dtype=w.dtype, device=w.device)
    out = torch.empty(B, max_new, dtype=torch.long, device=w.device)
    tokens, start = prompts.to(w.device), 0
    for i in range(max_new):
        T = tokens.shape[1]
        x = model.tok_emb(tokens) + model.pos_emb(torch.arange(start, start + T, device=w.device))
        for layer, block in enumerate(model.blocks):
            q, k, v = (t.transpose(1, 2) for t in block.qkv_heads(x))  # [B, H, T, hd]
            cache[layer, 0, :, :, start : start + T] = k
            cache[layer, 1, :, :, start : start + T] = v
            keys, values = cache[layer, 0, :, :, : start + T], cache[layer, 1, :, :, : start + T]
            att = F.scaled_dot_product_attention(q, keys, values, is_causal=T > 1)  # prefill starts at 0
            x = block.finish(x, att.transpose(1, 2).reshape(x.shape))
        out[:, i] = model.logits(x[:, -1]).argmax(-1)
        tokens, start = out[:, i : i + 1], start + T
    return out


@torch.inference_mode()
def greedy_paged(model: PagedLM, prompts: Sequence[Sequence[int]], max_new: int, block_size: int = 16) -> list[list[int]]:
    """Greedy continuations (`max_new` tokens each) of `prompts` of any lengths, batched through `model.step`.

    Any architecture's model will do (tinygpt, llama, gpt2: a `PagedLM`).
    """
    model.eval()
    need = [-(-(len(p) + max_new) // block_size) for p in prompts]
    kv = model.new_kv(sum(need), block_size)
    firsts = [sum(need[:s]) for s in range(len(prompts))]
    tables = [list(range(f, f + n)) for f, n in zip(firsts, need)]
    positions = [0] * len(prompts)
    feed = [list(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new):
        nxt = model.step(kv, feed, positions, tables).argmax(-1).tolist()
        positions = [p + len(f) for p, f in zip(positions, feed)]
        for seq, token in zip(out, nxt):
            seq.append(token)
        feed = [[t] for t in nxt]
    return out
