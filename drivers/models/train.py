"""Training tinygpt: one optimizer step, the default corpus, batches of windows, held-out perplexity.

The default corpus is read at run time from the Python standard library
sources installed on this machine (the `.py` files next to `os.py`), so
nothing is downloaded. Files are taken in sorted path order, so the corpus is
the same on every run on one machine (another Python version gives another
corpus). The tokenizer is byte-level, so a corpus is just its UTF-8 bytes;
files are joined with the EOS id between them.

The optimizer (AdamW) is made and kept by the caller, so a driver can keep its
state in device memory between steps and a checkpoint can save it.
"""

import functools
import math
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from .tinygpt import TinyGPT
from .tokenizer import EOS

SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3"})
"""Folders of the standard library left out of the corpus: third-party code and test suites."""


def stdlib_files(root: str | None = None) -> list[str]:
    """The `.py` files of the standard library (or under `root`), in sorted, deterministic order."""
    root = root or os.path.dirname(os.__file__)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return sorted(found, key=lambda p: os.path.relpath(p, root))


def stdlib_corpus(max_bytes: int = 4 << 20, root: str | None = None) -> torch.Tensor:
    """Token ids (int64) of the first `max_bytes` bytes of the standard library sources, files joined by EOS."""
    ids: list[int] = []
    for path in stdlib_files(root):
        with open(path, "rb") as fh:
            ids += fh.read(max_bytes - len(ids))
        if len(ids) >= max_bytes:
            break
        ids.append(EOS)
    if not ids:
        raise FileNotFoundError(f"no Python sources found under {root or os.path.dirname(os.__file__)}")
    return torch.tensor(ids[:max_bytes], dtype=torch.long)


def split_corpus(ids: torch.Tensor, held_out: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split token ids into (train, held-out): the last `held_out` fraction is held out."""
    if not 0.0 < held_out < 1.0:
        raise ValueError("held_out must be a fraction between 0 and 1")
    cut = int(len(ids) * (1.0 - held_out))
    return ids[:cut], ids[cut:]


def random_windows(ids: torch.Tensor, batch_size: int, window: int, generator: torch.Generator) -> torch.Tensor:
    """A [batch_size, window + 1] batch of windows at random offsets of `ids` (inputs plus the next token)."""
    if len(ids) < window + 1:
        raise ValueError(f"{len(ids)} tokens are fewer than one window of {window + 1}")
    starts = torch.randint(0, len(ids) - window, (batch_size,), generator=generator)
    return torch.stack([ids[s : s + window + 1] for s in starts.tolist()])


def batches(ids: torch.Tensor, batch_size: int, window: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """An endless, seeded stream of `random_windows` batches."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield random_windows(ids, batch_size, window, gen)


def make_optimizer(model: TinyGPT, lr: float = 3e-3, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over the model's parameters, with no weight decay on biases, norms and embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "emb" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def batch_loss(model: TinyGPT, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a [B, T + 1] batch of windows, in float32 at least (float64 stays float64)."""
    logits = model(batch[:, :-1])
    wide = torch.promote_types(logits.dtype, torch.float32)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).to(wide), batch[:, 1:].reshape(-1))


def set_hyperparams(optimizer: torch.optim.AdamW, lr: float, weight_decay: float) -> None:
    """Set the learning rate of every group and the weight decay of the decayed group (`make_optimizer`'s first)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.param_groups[0]["weight_decay"] = weight_decay


def train_step(
    model: TinyGPT,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    clip: float = 1.0,
    share: float = 1.0,
    reduce: Callable[[torch.Tensor], None] | None = None,
) -> tuple[float, float]:
    """One optimizer step on a [B, T + 1] batch of token windows; returns (loss before the step, gradient norm).

    Data parallel (docs/distributed.md): `batch` is this replica's shard of
    a larger batch, `share` its windows over the whole batch's, and `reduce`
    sums a flat CPU tensor over the replicas in place. The shard's mean loss
    is scaled by `share`, so the sum of the replicas' gradients is the
    gradient of the whole batch's mean loss; `sum_gradients` adds them up
    (with the loss), then every replica clips by the same global norm and
    takes the same step. A shard of no windows adds zeros. Alone (`reduce`
    None, `share` 1) it is a plain step on the whole batch.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    try:
        if len(batch):
            loss = batch_loss(model, batch.to(model.tok_emb.weight.device)) * share
            loss.backward()
            loss = loss.detach()
        else:
            loss = torch.zeros((), dtype=torch.float32)
        if reduce is not None:
            loss = sum_gradients(model, loss, reduce)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else float("inf"))
        optimizer.step()
    finally:
        model.eval()
    return loss.item(), norm.item()


def sum_gradients(model: torch.nn.Module, loss: torch.Tensor, reduce: Callable[[torch.Tensor], None]) -> torch.Tensor:
    """Sum every parameter's gradient and the loss over the replicas in one flat bucket; returns the summed loss.

    The bucket has the widest dtype of the gradients (float32 at least) and
    lives on the CPU, where gloo reduces it; a parameter without a gradient
    (it took no part, or the shard was empty) adds zeros. Each gradient is
    then set to its sum.
    """
    params = list(model.parameters())
    dtype = functools.reduce(torch.promote_types, [p.dtype for p in params], loss.dtype)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).to("cpu", dtype) for g in grads] + [loss.reshape(1).to("cpu", dtype)])
    reduce(flat)
    at = 0
    for p in params:
        p.grad = flat[at : at + p.numel()].view_as(p).to(p.device, p.dtype)
        at += p.numel()
    return flat[-1]


@torch.no_grad()
def perplexity(model: TinyGPT, ids: torch.Tensor, window: int = 128, batch_size: int = 16) -> float:
    """exp(mean next-token loss) over `ids`, read as consecutive non-overlapping windows."""
    model.eval()
    n = (len(ids) - 1) // window
    if n < 1:
        raise ValueError(f"{len(ids)} tokens are fewer than one window of {window + 1}")
    starts = range(0, n * window, window)
    total = 0.0
    for i in range(0, n, batch_size):
        batch = torch.stack([ids[s : s + window + 1] for s in starts[i : i + batch_size]])
        total += batch_loss(model, batch.to(model.tok_emb.weight.device)).item() * len(batch)
    return math.exp(total / n)
