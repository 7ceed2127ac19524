"""Hypothesis strategies for scheduler workloads and configurations.

`workloads()` draws small lists of requests (unique ids, sorted by arrival)
from a few processes; `budgets()` draws token and sequence budgets. Sizes are
kept small so that a property runs many examples in little time; every
parameter can be widened.
"""

from __future__ import annotations

from hypothesis import strategies as st
from llmos.services.scheduler.batching import Budget
from llmos.services.scheduler.request import Kind, Request


@st.composite
def workloads(draw, min_size: int = 1, max_size: int = 12, procs: int = 3, max_prompt: int = 48,
              max_output: int = 8, priorities: int = 3, training: bool = True,
              max_arrival: float = 0.02) -> list[Request]:
    """A list of requests from pids 1..`procs`, arriving in [0, `max_arrival`] seconds.

    Prompts are 1..`max_prompt` tokens, outputs 1..`max_output` tokens,
    priorities 0..`priorities`-1; with `training`, some requests are
    training steps (output 0).
    """
    n = draw(st.integers(min_size, max_size))
    requests = []
    for rid in range(n):
        kind = Kind.TRAINING if training and draw(st.integers(0, 5)) == 0 else Kind.INFERENCE
        requests.append(Request(
            rid=rid,
            pid=draw(st.integers(1, procs)),
            arrival=draw(st.floats(0, max_arrival, allow_nan=False)),
            prompt_len=draw(st.integers(1, max_prompt)),
            output_len=0 if kind is Kind.TRAINING else draw(st.integers(1, max_output)),
            priority=draw(st.integers(0, priorities - 1)),
            kind=kind,
        ))
    return sorted(requests, key=lambda r: (r.arrival, r.rid))


@st.composite
def budgets(draw, max_tokens: int = 64, max_seqs: int = 6, tokens_at_least_seqs: bool = True) -> Budget:
    """A budget of 1..`max_seqs` sequences and up to `max_tokens` tokens.

    With `tokens_at_least_seqs` the token budget is at least the sequence
    budget, the condition under which the waiting bounds of the built-in
    policies are stated.
    """
    seqs = draw(st.integers(1, max_seqs))
    tokens = draw(st.integers(seqs if tokens_at_least_seqs else 1, max(seqs, max_tokens)))
    return Budget(tokens, seqs)
