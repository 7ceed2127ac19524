"""The tokenizer of a Hugging Face-format model folder, read with the `tokenizers` library; torch-free.

The kernel tokenizes prompts and streams generated text itself, so this runs
in the kernel process: `tokenizers` (Rust, no torch) reads `tokenizer.json`;
`tokenizer_config.json` gives the BOS/EOS token strings and, with
`chat_template.jinja`, the chat template; the ids that end a generation come from `generation_config.json`
(`eos_token_id`, one id or a list), else from `config.json`, else from the
EOS token string. Streaming uses the library's `DecodeStream`, seeded with
the prompt, so a piece of text comes out only once its characters and its
merges are complete, and a leading space comes out as the whole text would
have it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

FILE = "tokenizer.json"


def _read_json(folder: str, name: str) -> dict:
    """A JSON file of the folder as a dict ({} when absent); ValueError when it is not JSON."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None
    return data if isinstance(data, dict) else {}


def _token_text(value) -> str:
    """A special token as tokenizer_config.json gives it: a string, or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content", "")
    return value if isinstance(value, str) else ""


def _ids(value) -> list[int]:
    """An `eos_token_id` entry: one id, a list of them, or nothing."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def _chat_template(folder: str, settings: dict) -> str:
    """The folder's chat template: chat_template.jinja (where transformers 4.50 and later write it),
    else tokenizer_config.json's `chat_template` (a string, or named templates: the "default" one)."""
    path = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    template = settings.get("chat_template") or ""
    if isinstance(template, list):
        named = {t.get("name"): t.get("template", "") for t in template if isinstance(t, dict)}
        template = named.get("default", "")
    return template if isinstance(template, str) else ""


class HFStream:
    """Generated ids in, text out, through the tokenizer's own decoder pipeline."""

    def __init__(self, tokenizer: Tokenizer, prompt: Sequence[int]):
        self.tokenizer = tokenizer
        self.prompt = list(prompt)
        self.ids: list[int] = []
        self.shown = ""
        self.decoder = DecodeStream(self.prompt, True)  # seeded with the prompt; special tokens skipped

    def step(self, token: int) -> str:
        """Add one id; return the text now complete ("" while a character or merge is not)."""
        self.ids.append(token)
        piece = self.decoder.step(self.tokenizer, token) or ""
        self.shown += piece
        return piece

    def finish(self) -> str:
        """The text still held back (bytes of a character that never completed become U+FFFD), so
        that all the pieces together are the text of the whole generation decoded at once."""
        base = self.tokenizer.decode(self.prompt, skip_special_tokens=True)
        whole = self.tokenizer.decode(self.prompt + self.ids, skip_special_tokens=True)
        if not whole.startswith(base) or not whole[len(base) :].startswith(self.shown):
            return ""
        return whole[len(base) + len(self.shown) :]


class HFTokenizer:
    """A folder's tokenizer (`llmos.syscalls.plugin.Tokenizer`)."""

    def __init__(self, folder: str):
        path = os.path.join(folder, FILE)
        try:
            self.tokenizer = Tokenizer.from_file(path)
        except Exception as exc:  # the library raises its own Exception for a malformed file
            raise ValueError(f"{FILE}: {exc}") from None
        settings = _read_json(folder, "tokenizer_config.json")
        generation = _read_json(folder, "generation_config.json")
        config = _read_json(folder, "config.json")
        self.name = f"{FILE} ({self.tokenizer.get_vocab_size(with_added_tokens=True)} tokens)"
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self.chat_template = _chat_template(folder, settings)
        self.bos_token = _token_text(settings.get("bos_token"))
        self.eos_token = _token_text(settings.get("eos_token"))
        eos = _ids(generation.get("eos_token_id")) or _ids(config.get("eos_token_id"))
        if not eos and self.eos_token and self.tokenizer.token_to_id(self.eos_token) is not None:
            eos = [self.tokenizer.token_to_id(self.eos_token)]
        self.eos_ids = frozenset(eos)

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, nothing added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_prompt(self, text: str) -> list[int]:
        """The ids of `text` as a prompt: with whatever the tokenizer's post-processor adds (Llama's BOS)."""
        return self.tokenizer.encode(text, add_special_tokens=True).ids

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def stream(self, prompt: Sequence[int]) -> HFStream:
        """A text stream for the ids generated after `prompt`."""
        return HFStream(self.tokenizer, prompt)


def folder_tokenizer(folder: str) -> HFTokenizer | None:
    """The folder's tokenizer, or None when it has no tokenizer.json.

    The kernel asks on every model_load, and parsing a large tokenizer.json
    takes a noticeable while in its one thread, so a folder's tokenizer is
    read once and kept while its files are unchanged (a tokenizer holds no
    per-generation state: each stream is its own object).
    """
    if not folder:
        return None
    stamps = []
    for name in (FILE, "tokenizer_config.json", "generation_config.json", "config.json", "chat_template.jinja"):
        try:
            st = os.stat(os.path.join(folder, name))
            stamps.append((name, st.st_mtime_ns, st.st_size))
        except FileNotFoundError:
            stamps.append((name, 0, -1))
    if stamps[0][2] < 0:
        return None
    return _read_tokenizer(os.path.realpath(folder), tuple(stamps))


@functools.lru_cache(maxsize=16)
def _read_tokenizer(folder: str, stamps: tuple) -> HFTokenizer:
    """`HFTokenizer(folder)`, once per folder and version of its files (`stamps`)."""
    return HFTokenizer(folder)
