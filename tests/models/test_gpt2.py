"""gpt2: the same weights give transformers' GPT2LMHeadModel logits, in the plain forward and in any paged schedule."""

import pytest
import torch
import transformers
from llmos.drivers.models import architectures
from llmos.drivers.models.gpt2 import GPT2, GPT2Config
from llmos.drivers.models.gpt2_config import gpt2_size
from llmos.drivers.models.reference import greedy_paged
from model_checks import (
    check_fork,
    check_hf_round_trip,
    check_interleaved,
    check_size_function,
    check_training,
    spread_weights,
)

ATOL = 1e-4
VOCAB = 300
VARIANTS = {
    "tied": dict(),
    "untied_exact_gelu": dict(tie_word_embeddings=False, activation_function="gelu", n_inner=80, layer_norm_epsilon=1e-3),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request):
    """(transformers' GPT2LMHeadModel, llmos's GPT2 with the same weights)."""
    hf_config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                        bos_token_id=None, eos_token_id=None, **VARIANTS[request.param])  # fmt: skip
    torch.manual_seed(0)
    ref = spread_weights(transformers.GPT2LMHeadModel(hf_config), 0).eval()
    ours = GPT2(GPT2Config.from_hf(ref.config.to_dict()))
    ours.load_hf(ref.state_dict())
    return ref, ours.eval()


def hf_reference(ref):
    """Logits [T, vocab] of transformers' model on one whole sequence."""
    return lambda seq: ref(torch.tensor([seq])).logits[0].detach()


def test_forward_matches_transformers(pair):
    ref, ours = pair
    tokens = torch.randint(0, VOCAB, (3, 90), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(tokens).logits
        got = ours(tokens)
    assert expected.abs().max() > 1.0
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_interleaved_paged_steps_match_transformers(pair, seed):
    ref, ours = pair
    check_interleaved(ours, hf_reference(ref), seed, ATOL, vocab=VOCAB)


def test_copy_on_write_fork_matches_transformers(pair):
    ref, ours = pair
    check_fork(ours, hf_reference(ref), ATOL)


def test_greedy_steps_match_transformers_generate(pair):
    ref, ours = pair
    prompts = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(2))
    out = ref.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12, do_sample=False,
                       eos_token_id=None, pad_token_id=0)  # fmt: skip
    assert greedy_paged(ours, prompts.tolist(), 12, block_size=3) == out[:, 7:].tolist()


def test_original_file_names_and_mask_buffers_load(pair):
    """The original gpt2 upload has no `transformer.` prefix and holds the attention mask buffers."""
    ref, ours = pair
    tensors = ours.hf_tensors()
    old = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    old |= {"h.0.attn.bias": torch.ones(1, 1, 128, 128), "h.1.attn.masked_bias": torch.tensor(-1e4)}
    other = GPT2(ours.config)
    other.load_hf(old)
    assert all(torch.equal(v, other.hf_tensors()[k]) for k, v in tensors.items())
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)  # Conv1D: [in, out]
    with pytest.raises(ValueError, match="missing"):
        other.load_hf({k: v for k, v in tensors.items() if "ln_f" not in k})


@pytest.mark.parametrize(
    "config, dtype, kv_blocks, block_size",
    [(dict(d_model=64, n_layers=2, n_heads=4, max_len=64), "float32", 7, 4),
     (dict(d_model=48, n_layers=1, n_heads=6, ffn_dim=100, tie_weights=False, gelu="none"), "bfloat16", 3, 16)],
)  # fmt: skip
def test_the_kernels_size_function_gives_what_the_driver_builds(config, dtype, kv_blocks, block_size):
    check_size_function("gpt2", gpt2_size, config, dtype, kv_blocks, block_size, [{"d_model": 64.0}])


def test_save_pretrained_loads_in_transformers_and_back_bit_identical(pair, tmp_path):
    ref, ours = pair
    assert check_hf_round_trip(ours, ref, "gpt2", tmp_path, VOCAB, ATOL)["model_type"] == "gpt2"


def test_training_steps_lower_the_loss():
    check_training("gpt2", dict(d_model=32, n_layers=2, n_heads=4, max_len=32))


def test_config_round_trips_and_refusals():
    cfg = GPT2Config(d_model=64, n_heads=4, ffn_dim=100, ln_eps=1e-3, gelu="none", tie_weights=False)
    assert GPT2Config.from_dict(cfg.to_dict()) == cfg and GPT2Config.from_hf(cfg.to_hf()) == cfg
    assert GPT2Config(d_model=64, n_heads=4).ffn_dim == 256
    for bad, field in [({"activation_function": "relu"}, "activation_function"),
                       ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
                       ({"scale_attn_weights": False}, "scale_attn_weights"), ({"model_type": "gptj"}, "model_type")]:  # fmt: skip
        with pytest.raises(ValueError, match=field):
            GPT2Config.from_hf({**cfg.to_hf(), **bad})
    with pytest.raises(ValueError):
        GPT2Config(gelu="sigmoid")
    assert architectures()["gpt2"].model_class is GPT2
