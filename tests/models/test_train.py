"""Training: the stdlib corpus is deterministic, a few dozen steps lower the loss, perplexity is sane."""

import math
import os

import torch
from llmos.drivers.models import TinyGPT, TinyGPTConfig
from llmos.drivers.models.tokenizer import EOS
from llmos.drivers.models.train import (
    batches,
    make_optimizer,
    perplexity,
    split_corpus,
    stdlib_corpus,
    stdlib_files,
    train_step,
)


def test_stdlib_corpus_is_deterministic_and_local():
    files = stdlib_files()
    assert files == sorted(files, key=lambda p: os.path.relpath(p, os.path.dirname(os.__file__)))
    assert any(f.endswith(os.sep + "os.py") for f in files)
    assert not any("site-packages" in f for f in files)
    a, b = stdlib_corpus(200_000), stdlib_corpus(200_000)
    assert torch.equal(a, b) and len(a) == 200_000
    assert (a == EOS).any() and int(a.max()) <= EOS
    train, held = split_corpus(a, 0.1)
    assert len(train) == 180_000 and torch.equal(torch.cat([train, held]), a)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    train, held = split_corpus(stdlib_corpus(300_000))
    model = TinyGPT(TinyGPTConfig(d_model=48, n_layers=2, n_heads=4, max_len=48))
    opt = make_optimizer(model)
    stream = batches(train, batch_size=8, window=48, seed=0)
    held = held[:48 * 16 + 1]
    ppl0 = perplexity(model, held, window=48)
    assert 150 < ppl0 < 400  # an untrained model is near uniform over 259 ids
    losses = [train_step(model, opt, next(stream))[0] for _ in range(40)]
    assert math.isclose(losses[0], math.log(ppl0), rel_tol=0.1)
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0]
    assert perplexity(model, held, window=48) < 0.2 * ppl0
