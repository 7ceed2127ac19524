"""Sampling: greedy, seeded determinism, top-k / top-p cuts, and stop strings in a token stream."""

import pytest
import torch
from llmos.drivers.models.decoding import SamplingParams, StopStream
from llmos.drivers.models.sampling import filter_logits, make_generator, sample, sample_batch
from llmos.drivers.models.tokenizer import EOS, ByteTokenizer


def test_greedy_is_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample(logits, SamplingParams()) == 1


def test_same_seed_same_tokens_different_seed_differs():
    logits = torch.zeros(50)
    params = SamplingParams(temperature=1.0)
    draw = lambda seed: [sample(logits, params, g) for g in [make_generator(seed)] for _ in range(20)]
    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_top_k_and_top_p_keep_only_the_head():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [False, False, True, True]
    # 0.5 + 0.3 reaches 0.8: the nucleus is the first two tokens
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [False, False, True, True]
    assert torch.isinf(filter_logits(logits, top_p=0.81)).tolist() == [False, False, False, True]
    gen = make_generator(0)
    params = SamplingParams(temperature=2.0, top_k=3, top_p=0.6)
    assert {sample(logits, params, gen) for _ in range(200)} == {0, 1}


def test_sample_batch_uses_each_sequence_generator():
    logits = torch.zeros(2, 30)
    params = [SamplingParams(temperature=1.0, seed=1), SamplingParams()]
    a = [sample_batch(logits, params, [g, None]) for g in [make_generator(1)] for _ in range(10)]
    alone = [sample(logits[0], params[0], g) for g in [make_generator(1)] for _ in range(10)]
    assert [row[0] for row in a] == alone and all(row[1] == 0 for row in a)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)


def test_stop_stream_holds_back_and_cuts():
    tok = ByteTokenizer()
    stream = StopStream(["\n\n", "END"], tok)
    pieces = [stream.feed(t) for t in tok.encode("héllo EN wor✓ld\nx\n\nafter")]
    assert "".join(pieces) == stream.text == "héllo EN wor✓ld\nx"
    assert stream.stopped
    assert all("\ufffd" not in p for p in pieces)  # no half characters shown
    assert stream.feed(65) == ""


def test_stop_stream_flushes_on_eos():
    tok = ByteTokenizer()
    stream = StopStream(["STOP"], tok)
    shown = "".join(stream.feed(t) for t in tok.encode("a ST"))
    assert shown == "a "  # "ST" might start STOP
    assert stream.feed(EOS) == "ST" and stream.text == "a ST" and stream.stopped
