"""Tiny Hugging Face-format model folders for tests: random weights from `transformers`, a BPE tokenizer
trained with `tokenizers` on a few KB of text, written with `save_pretrained` as a user's folder would be.

`transformers` is the reference: tests load the same folder into it and into
llmos and compare logits, greedy texts and saved files.
"""

import json
import os
import random

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOS, EOS = "<s>", "</s>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""A small chat template in the usual shape: BOS, role-tagged turns each ended by EOS, the assistant's cue."""


WORDS = ("device kernel process handle tensor model token block queue policy memory syscall driver spawn wait "
         "kill share alloc free read write step train generate prefix cache swap pool quota rights audit").split()


def corpus() -> list[str]:
    """A few KB of code-like text to learn merges from, drawn from a fixed seed: the same on every machine and
    at every commit (a corpus read from the repository's own sources would change the merges, and with them
    the prompts' lengths in blocks, whenever those sources change)."""
    rng = random.Random(0)
    lines = []
    for _ in range(120):
        a, b, c = rng.sample(WORDS, 3)
        lines.append(f'def {a}_{b}(self, {c}: int) -> "{b.title()}":\n    """Return the {c} of the {a}."""\n'
                     f"    return self.{a}s[{c}]\n")
        lines.append(f"class {a.title()}{b.title()}(Call, tag=int(Sys.{a.upper()}_{c.upper()})):\n    {c}: int = 0\n")
    return ["\n".join(lines), "héllo wörld ✓ naïve café — 東京"]


def train_tokenizer(vocab_size: int = 400, bos: bool = True) -> Tokenizer:
    """A byte-level BPE tokenizer; with `bos`, it starts every prompt with BOS as Llama's does."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def save_tokenizer(tok: Tokenizer, folder: str, chat_template: str = "") -> None:
    """tokenizer.json and tokenizer_config.json, through transformers' own fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)


def llama_folder(folder: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, chat: bool = True, **shape):
    """A tiny Llama (GQA: 4 heads, 2 KV heads) with a BOS-adding tokenizer; returns the transformers model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer()
    save_tokenizer(tok, folder, CHAT_TEMPLATE if chat else "")
    settings = dict(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, rope_theta=10000.0,
        bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS), tie_word_embeddings=False,
    )  # fmt: skip
    settings.update(shape)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings)).to(dtype).eval()
    model.save_pretrained(folder)
    return model


def gpt2_folder(folder: str, *, seed: int = 0):
    """A tiny GPT-2 with a tokenizer that adds nothing to a prompt; returns the transformers model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = train_tokenizer(bos=False)
    save_tokenizer(tok, folder)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_embd=64, n_layer=2, n_head=4, n_positions=128,
        bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return model


def folder_tokenizer(folder: str):
    """The folder's tokenizer as transformers reads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def config_of(folder: str) -> dict:
    """The folder's config.json."""
    with open(os.path.join(folder, "config.json")) as f:
        return json.load(f)
