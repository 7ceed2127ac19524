"""The pluggy markers of llmos, importable by every layer.

Plugins (drivers, services, programs, third-party packages) mark their hook
implementations with `hookimpl`; the hook specifications themselves live in
one module, `llmos.kernel.hookspecs`.
"""

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import pluggy

PROJECT = "llmos"
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)


class DriverEntry(NamedTuple):
    """A driver a plugin provides: its kind (`cpu`), where its class lives, a line of help.

    `target` is "module:Class"; only driver host processes import it, so the
    kernel never loads torch or a device runtime itself.
    """

    kind: str
    target: str
    help: str = ""


class ProgramEntry(NamedTuple):
    """A userland program a plugin provides: `llmos run NAME` and the spawn syscall start it.

    `target` is "module:function"; the function takes the argument list and
    returns an exit status. An `interactive` program reads its user's input:
    the kernel spawns children with no stdin, so `llmos run` calls it in its
    own process instead (attached to the same kernel).
    """

    name: str
    target: str
    help: str = ""
    interactive: bool = False


class ModelFolder(NamedTuple):
    """What a model plugin reads from a Hugging Face-format folder before anything is built.

    `arch`: the llmos architecture that serves it; `config`: its llmos config
    dict (what `llmos_model_sizes`' function sizes); `dtype`: the stored weights'
    dtype ("float32", "float16", "bfloat16").
    """

    arch: str
    config: dict
    dtype: str


class TextStream(Protocol):
    """Token ids of one generated sequence in, text out: never half a character or half a merged token."""

    def step(self, token: int) -> str:
        """Add one token; return the text it completes ("" while a character or merge is incomplete)."""

    def finish(self) -> str:
        """The sequence ended: the text still held back."""


class Tokenizer(Protocol):
    """A model's tokenizer as the kernel uses it (`llmos_tokenizer`); torch-free.

    `name` says which it is; `eos_ids` end a generation; `chat_template`
    (Jinja, or ""), `bos_token` and `eos_token` are for chat programs.
    """

    name: str
    vocab_size: int
    eos_ids: frozenset[int]
    chat_template: str
    bos_token: str
    eos_token: str

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, nothing added."""

    def encode_prompt(self, text: str) -> list[int]:
        """The ids of `text` as a prompt: with what the tokenizer adds to one (e.g. BOS), if anything."""

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, special tokens dropped."""

    def stream(self, prompt: Sequence[int]) -> TextStream:
        """A text stream for the tokens generated after `prompt`."""
