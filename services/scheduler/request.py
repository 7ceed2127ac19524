"""The unit of scheduled work: a request and the sequence that tracks its progress.

A `Request` is what a process asks for and never changes: an inference request
(a prompt of `prompt_len` tokens, then up to `output_len` generated tokens) or
a training step (`prompt_len` tokens of forward and backward work, no output).
A `Sequence` is the scheduler's mutable view of one request: how many tokens
have their KV computed on the device, how many output tokens exist, and where
the sequence stands (waiting, running, swapped out, finished).

Progress follows one rule for prefill, decode and recompute alike: the
sequence must feed its context (`prompt_len + generated` tokens) through the
model; when everything fed is computed, the model emits the next token. A
decode is the case where exactly one token (the last output) is left to feed.
A sequence preempted by recompute loses its computed KV but keeps its output,
so it re-feeds prompt and output and then continues exactly where it stopped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    """What a request asks the device to do."""

    INFERENCE = "inference"
    TRAINING = "training"


class State(enum.Enum):
    """Where a sequence stands in the scheduler."""

    WAITING = "waiting"  # runnable, holds no device KV (new, or preempted by recompute)
    RUNNING = "running"  # runnable, holds device KV blocks
    SWAPPED = "swapped"  # runnable, its KV blocks are in host memory
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class Request:
    """One piece of work submitted by process `pid` at time `arrival` (seconds).

    For inference, `output_len` is the number of tokens to generate (at least
    one). For a training step, `prompt_len` is the number of tokens in the step
    and `output_len` must be 0. Lower `priority` numbers are *less* urgent:
    the priority policy runs the highest number first.
    """

    rid: int
    pid: int
    arrival: float
    prompt_len: int
    output_len: int
    priority: int = 0
    kind: Kind = Kind.INFERENCE

    def __post_init__(self) -> None:
        """Reject requests no scheduler could complete."""
        if self.prompt_len < 1:
            raise ValueError(f"request {self.rid}: prompt_len must be >= 1")
        if self.kind is Kind.INFERENCE and self.output_len < 1:
            raise ValueError(f"request {self.rid}: an inference request generates at least one token")
        if self.kind is Kind.TRAINING and self.output_len != 0:
            raise ValueError(f"request {self.rid}: a training step has output_len 0")
        if self.arrival < 0:
            raise ValueError(f"request {self.rid}: arrival must be >= 0")


class Sequence:
    """The scheduler's progress record of one request.

    Policies read these fields (and `request`'s) to order sequences; only the
    scheduler changes them.

    Attributes:
        request: the `Request` it serves (its `arrival`, `prompt_len`, `output_len`, `priority`, `kind`).
        rid: the request's id.
        pid: the process that submitted it.
        computed: tokens whose KV is on the device (for training: tokens already processed).
        generated: output tokens emitted so far.
        state: where it is: waiting, running, swapped or finished (`State`).
        first_token_at: when its first output token was emitted (None until then).
        finished_at: when it finished (None until then).
        preemptions: how many times it was preempted.
    """

    __slots__ = (
        "computed",
        "finished_at",
        "first_token_at",
        "generated",
        "pid",
        "preemptions",
        "request",
        "rid",
        "state",
    )

    def __init__(self, request: Request) -> None:
        """Start a sequence for `request` with nothing computed."""
        self.request = request
        self.rid = request.rid
        self.pid = request.pid
        self.computed = 0
        self.generated = 0
        self.state = State.WAITING
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.preemptions = 0

    @property
    def is_training(self) -> bool:
        """Whether this sequence is a training step (no KV, no output)."""
        return self.request.kind is Kind.TRAINING

    @property
    def pending(self) -> int:
        """Tokens still to feed before the next output token (or the end of a training step)."""
        return self.request.prompt_len + self.generated - self.computed

    @property
    def is_decode(self) -> bool:
        """Whether the next step of this sequence is a one-token decode."""
        return self.generated > 0 and self.request.prompt_len + self.generated - self.computed == 1

    @property
    def done(self) -> bool:
        """Whether the request has all its output (or its whole training step)."""
        return self.state is State.FINISHED

    def advance(self, fed: int) -> bool:
        """Record that `fed` tokens went through the model; return whether a token was emitted."""
        self.computed += fed
        if self.computed < self.request.prompt_len + self.generated:
            return False
        if self.request.kind is Kind.TRAINING:
            return False
        self.generated += 1
        return True

    @property
    def complete(self) -> bool:
        """Whether the work of the request is all done (output generated or step processed)."""
        if self.request.kind is Kind.TRAINING:
            return self.computed >= self.request.prompt_len
        return self.generated >= self.request.output_len

    def __repr__(self) -> str:
        """Short form for traces and test failures."""
        return (f"Sequence(rid={self.rid}, pid={self.pid}, {self.state.value}, "
                f"computed={self.computed}, generated={self.generated})")
