"""llama: the same weights give transformers' logits, in the plain forward and in any paged schedule.

The reference is transformers' own implementation (LlamaForCausalLM, and
Qwen2ForCausalLM for biased q/k/v), built tiny with a fixed seed; its
weights load into llmos's Llama by their Hugging Face names.
"""

import dataclasses

import pytest
import torch
import transformers
from llmos.drivers.models import architectures
from llmos.drivers.models.llama import Llama, LlamaConfig
from llmos.drivers.models.llama_config import llama_size
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

SHAPE = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=128)  # fmt: skip
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}  # fmt: skip
VARIANTS = {
    "gqa": (transformers.LlamaConfig, dict(num_key_value_heads=2)),
    "mha_tied": (transformers.LlamaConfig, dict(num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500.0)),
    "llama3_rope": (transformers.LlamaConfig, dict(num_key_value_heads=1, rope_scaling=LLAMA3, rope_theta=5000.0)),
    "qwen2_bias": (transformers.Qwen2Config, dict(num_key_value_heads=2)),
}


def reference_model(variant: str, seed: int = 0):
    """transformers' model of a variant, weights drawn wide from `seed`, in eval mode."""
    config_class, extra = VARIANTS[variant]
    hf_config = config_class(**SHAPE, **extra, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model_class = transformers.Qwen2ForCausalLM if config_class is transformers.Qwen2Config else transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    return spread_weights(model_class(hf_config), seed).eval()


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request):
    """(variant, transformers' model, llmos's Llama with the same weights)."""
    ref = reference_model(request.param)
    ours = Llama(LlamaConfig.from_hf(ref.config.to_dict()))
    ours.load_hf(ref.state_dict())  # a tied model's state dict also holds lm_head.weight, the embedding itself
    return request.param, ref, ours.eval()


def hf_reference(ref):
    """Logits [T, vocab] of transformers' model on one whole sequence."""
    return lambda seq: ref(torch.tensor([seq])).logits[0].detach()


def test_forward_matches_transformers(pair):
    variant, ref, ours = pair
    assert ours.config.qkv_bias == (variant == "qwen2_bias")
    assert (ours.config.rope_factor == 8.0) == (variant == "llama3_rope")
    tokens = torch.randint(0, VOCAB, (3, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(tokens).logits
        got = ours(tokens)
    assert expected.abs().max() > 1.0  # the weights are wide enough for the comparison to mean something
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    lp = ours.log_probs(tokens)
    torch.testing.assert_close(lp[1, 7], torch.log_softmax(expected[1, 7], -1)[tokens[1, 8]], atol=ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_interleaved_paged_steps_match_transformers(pair, seed):
    _, ref, ours = pair
    check_interleaved(ours, hf_reference(ref), seed, ATOL, vocab=VOCAB)


def test_copy_on_write_fork_matches_transformers(pair):
    _, ref, ours = pair
    check_fork(ours, hf_reference(ref), ATOL)
    assert ours.new_kv(3, 4).data.shape == (2, 3, 4, 2, ours.config.n_kv_heads, 16)  # only the KV heads are stored


def test_greedy_steps_match_transformers_generate(pair):
    _, ref, ours = pair
    prompts = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(2))
    out = ref.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=12, do_sample=False,
                       eos_token_id=None, pad_token_id=0)  # fmt: skip
    assert greedy_paged(ours, prompts.tolist(), 12, block_size=5) == out[:, 9:].tolist()


@pytest.mark.parametrize(
    "config, dtype, kv_blocks, block_size",
    [(dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_len=64), "float32", 7, 4),
     (dict(d_model=48, n_layers=1, n_heads=6, n_kv_heads=3, head_dim=10, tie_weights=False, qkv_bias=True), "bfloat16", 3, 16),
     ({}, "float16", 1, 1)],
)  # fmt: skip
def test_the_kernels_size_function_gives_what_the_driver_builds(config, dtype, kv_blocks, block_size):
    bad = [{"n_layers": 2.5}, {"n_heads": "four"}]
    check_size_function("llama", llama_size, config, dtype, kv_blocks, block_size, bad)


def test_save_pretrained_loads_in_transformers_and_back_bit_identical(pair, tmp_path):
    variant, ref, ours = pair
    config = check_hf_round_trip(ours, ref, "llama", tmp_path, VOCAB, ATOL)
    assert config["model_type"] == ("qwen2" if variant == "qwen2_bias" else "llama")
    assert config["torch_dtype"] == "float32"
    assert ("lm_head.weight" in ours.hf_tensors()) == (not ours.config.tie_weights)


def test_training_steps_lower_the_loss():
    check_training("llama", dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_len=32))


def test_config_round_trips_and_refusals():
    cfg = LlamaConfig(d_model=64, n_heads=4, n_kv_heads=2, rope_factor=8.0, rope_original_max_len=64, qkv_bias=True)
    assert cfg.head_dim == 16 and LlamaConfig.from_dict(cfg.to_dict()) == cfg
    assert all(isinstance(v, (int, float, str, bool)) for v in cfg.to_dict().values())
    assert LlamaConfig.from_hf(cfg.to_hf()) == cfg
    mistral = {**cfg.to_hf(), "model_type": "mistral", "sliding_window": None}
    assert LlamaConfig.from_hf(mistral) == dataclasses.replace(cfg, qkv_bias=False)
    base = LlamaConfig().to_hf()
    for bad, field in [({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_scaling"),
                       ({"model_type": "mistral", "sliding_window": 64}, "sliding_window"),
                       ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 64}, "sliding_window"),
                       ({"hidden_act": "gelu"}, "hidden_act"), ({"attention_bias": True}, "attention_bias"),
                       ({"model_type": "gemma"}, "model_type")]:  # fmt: skip
        with pytest.raises(ValueError, match=field):
            LlamaConfig.from_hf({**base, **bad})
    with pytest.raises(ValueError):
        LlamaConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError):
        LlamaConfig.from_dict({"bogus": 1})
    assert architectures()["llama"].model_class is Llama


def test_load_hf_is_strict():
    model = Llama(LlamaConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, ffn_dim=32, max_len=16, tie_weights=False))
    tensors = model.hf_tensors()
    with pytest.raises(ValueError, match="missing.*lm_head.weight"):
        model.load_hf({k: v for k, v in tensors.items() if k != "lm_head.weight"})
    with pytest.raises(ValueError, match="unexpected.*model.layers.5.mlp.up_proj.weight"):
        model.load_hf({**tensors, "model.layers.5.mlp.up_proj.weight": tensors["model.layers.0.mlp.up_proj.weight"]})
    with pytest.raises(ValueError, match="shape"):
        model.load_hf({**tensors, "model.norm.weight": torch.ones(3)})
    tied = Llama(LlamaConfig(vocab_size=50, d_model=16, n_layers=1, n_heads=2, ffn_dim=32, max_len=16))
    with pytest.raises(ValueError, match="tied"):
        tied.load_hf({**tied.hf_tensors(), "lm_head.weight": torch.zeros(50, 16)})
