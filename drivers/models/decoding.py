"""Decoding settings and text streaming, with no torch: what the kernel needs to run a generate call.

`SamplingParams` are one request's sampling settings, checked when made.
Stop strings are text, not tokens: with a byte-level tokenizer a stop string
can end in the middle of a token stream and a character can span several
tokens. `StopStream` turns the token stream of one sequence into text pieces
safe to show: through the tokenizer's text stream, it holds back incomplete
characters (and, for a BPE tokenizer, unfinished merges) and any tail that
might be the start of a stop string, and ends the text just before a stop
string once one appears.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from llmos.syscalls.plugin import Tokenizer


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request: temperature 0 is greedy; top_k 0 and top_p 1.0 disable the cuts."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("temperature and top_k must be >= 0 and top_p in (0, 1]")


class StopStream:
    """Token ids of one generated sequence in, text safe to show out, ending before the first stop string."""

    def __init__(self, stop: Sequence[str], tokenizer: Tokenizer, prompt: Sequence[int] = ()):
        """Stream the text `tokenizer` makes of the ids generated after `prompt`, cut at the first of `stop`."""
        self.stop = [s for s in stop if s]
        self.eos_ids = tokenizer.eos_ids
        self._decoder = tokenizer.stream(prompt)
        self._pending = ""  # decoded text not yet shown: it may begin a stop string
        self.text = ""  # all text shown so far
        self.stopped = False

    def feed(self, token: int) -> str:
        """Add one generated token; return the new text that is now safe to show (may be "")."""
        if self.stopped:
            return ""
        if token in self.eos_ids:
            return self.finish()
        self._pending += self._decoder.step(token)
        for s in self.stop:
            at = self._pending.find(s)
            if at >= 0:
                self.stopped = True
                return self._emit(self._pending[:at])
        hold = max((n for s in self.stop for n in range(len(s) - 1, 0, -1) if self._pending.endswith(s[:n])), default=0)
        return self._emit(self._pending[: len(self._pending) - hold])

    def finish(self) -> str:
        """End the stream (EOS or max tokens): return the held-back text, flushed."""
        if self.stopped:
            return ""
        self.stopped = True
        return self._emit(self._pending + self._decoder.finish())

    def _emit(self, piece: str) -> str:
        """Move `piece` (a prefix of the pending text) to the shown text."""
        self._pending = self._pending[len(piece) :]
        self.text += piece
        return piece


class _Silent:
    """A text stream that makes no text."""

    def step(self, token: int) -> str:
        return ""

    def finish(self) -> str:
        return ""


class _NoText:
    """The stand-in tokenizer of a model that has none: no text, no EOS (generate gives ids only)."""

    eos_ids: frozenset[int] = frozenset()

    def stream(self, prompt: Sequence[int]) -> _Silent:
        return _Silent()


NO_TEXT = _NoText()
"""What `StopStream` streams through for a model without a tokenizer."""
