"""Workloads for the simulator and benchmarks: a seeded generator and a JSON-lines format.

A workload is a list of `Request`s sorted by arrival. `generate` draws one
from a seed: Poisson arrivals, log-normal prompt lengths, heavy-tailed
(Pareto) output lengths, each process sending a share of the requests set by
its weight. The same arguments always give the same list.

The file format has one JSON object per line, e.g.::

    {"arrival": 0.0, "pid": 1, "prompt": 128, "output": 64}
    {"arrival": 0.01, "pid": 2, "prompt": 512, "output": 0, "kind": "training"}

with optional "priority" (default 0) and "id" (default: the line's index).

Shared prefixes. `share_prefix` gives requests token ids, so that a prefix
cache has something to find: each prompt starts with one of a few system
prompts, drawn from a seed, followed by tokens of its own. The ids are
synthetic (`SharedPrefixes` says how they are made) and depend only on the
arguments.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from llmos.services.scheduler.request import Kind, Request


def generate(n: int, procs: int = 3, seed: int = 0, rate: float = 50.0, prompt_mean: int = 256,
             output_mean: int = 128, max_len: int = 2048, weights: Sequence[float] | None = None,
             priorities: int = 1, training: float = 0.0) -> list[Request]:
    """Draw `n` requests from `procs` processes (pids 1..procs), reproducibly from `seed`.

    Arrivals are a Poisson process of `rate` requests per second (all at time
    0 when `rate` is 0). Prompt lengths are log-normal around `prompt_mean`;
    output lengths are Pareto (shape 1.5) with mean `output_mean`; both are
    capped at `max_len`. `weights` gives each process's share of requests
    (equal by default); priorities are drawn uniformly from
    0..`priorities`-1; a fraction `training` of the requests are training
    steps of a prompt-sized number of tokens.
    """
    if n < 0 or procs < 1:
        raise ValueError("need n >= 0 and procs >= 1")
    weights = list(weights) if weights is not None else [1.0] * procs
    if len(weights) != procs:
        raise ValueError("one weight per process")
    rng = random.Random(seed)
    pids = list(range(1, procs + 1))
    shape = 1.5
    scale = output_mean * (shape - 1) / shape
    now = 0.0
    requests = []
    for rid in range(n):
        if rate > 0:
            now += rng.expovariate(rate)
        pid = rng.choices(pids, weights)[0]
        prompt = min(max_len, max(1, round(rng.lognormvariate(0.0, 0.6) * prompt_mean / 1.2)))
        is_training = rng.random() < training
        output = 0 if is_training else min(max_len, max(1, round(scale * rng.paretovariate(shape))))
        requests.append(Request(rid, pid, round(now, 6), prompt, output, rng.randrange(priorities),
                                Kind.TRAINING if is_training else Kind.INFERENCE))
    return requests


def parse(lines: Iterable[str]) -> list[Request]:
    """Read requests from JSON lines (blank lines and lines starting with # are skipped)."""
    requests = []
    for index, line in enumerate(lines):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            obj = json.loads(line)
            requests.append(Request(int(obj.get("id", index)), int(obj["pid"]), float(obj["arrival"]),
                                    int(obj["prompt"]), int(obj["output"]), int(obj.get("priority", 0)),
                                    Kind(obj.get("kind", "inference"))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"workload line {index + 1}: {exc}") from exc
    return sorted(requests, key=lambda r: (r.arrival, r.rid))


def load(path: str | Path) -> list[Request]:
    """Read a JSON-lines workload file."""
    with open(path, encoding="utf-8") as f:
        return parse(f)


def dump(requests: Iterable[Request], out: TextIO) -> None:
    """Write `requests` as JSON lines that `parse` reads back unchanged."""
    for r in requests:
        obj = {"id": r.rid, "arrival": r.arrival, "pid": r.pid, "prompt": r.prompt_len,
               "output": r.output_len, "priority": r.priority, "kind": r.kind.value}
        out.write(json.dumps(obj) + "\n")


_SYSTEM, _OWN, _OUTPUT = 1 << 60, 2 << 60, 3 << 60  # the three kinds of synthetic token id


@dataclass(frozen=True)
class SharedPrefixes:
    """The token ids of a workload whose prompts start with shared system prompts.

    Every request's prompt is system prompt `prefix_of[rid]` (`length`
    tokens) followed by its own `prompt_len - length` tokens; its output token
    at position p (counted from the start of the prompt) depends only on
    (rid, p). Ids are built so that different things never share one: token i
    of system prompt k is `2**60 + k * 2**30 + i`, token j of request r's own
    part `2 * 2**60 + r * 2**30 + j`, its output at position p
    `3 * 2**60 + r * 2**30 + p`.
    """

    length: int
    count: int
    prefix_of: Mapping[int, int]  # rid -> index of its system prompt
    prompt_len: Mapping[int, int]  # rid -> whole prompt length, system prompt included

    def system_prompt(self, k: int) -> list[int]:
        """The token ids of system prompt `k`."""
        return [_SYSTEM + (k << 30) + i for i in range(self.length)]

    def prompt(self, rid: int) -> list[int]:
        """The token ids of request `rid`'s whole prompt."""
        own = self.prompt_len[rid] - self.length
        return self.system_prompt(self.prefix_of[rid]) + [_OWN + (rid << 30) + j for j in range(own)]

    def context_of(self, rid: int, generated: int) -> list[int]:
        """Request `rid`'s context after `generated` output tokens: its prompt, then its output so far."""
        start = self.prompt_len[rid]
        return self.prompt(rid) + [_OUTPUT + (rid << 30) + p for p in range(start, start + generated)]


def share_prefix(requests: Sequence[Request], length: int, count: int = 1,
                 seed: int = 0) -> tuple[list[Request], SharedPrefixes]:
    """Put a system prompt of `length` tokens before each inference request's prompt; the requests and their ids.

    Each inference request draws one of `count` system prompts uniformly,
    reproducibly from `seed` (a random stream of its own, so the workload's
    other draws do not change), and its `prompt_len` grows by `length`: the
    given length is that of its own part. Training steps hold no KV, so they
    stay as they are and have no ids.
    """
    if length < 1 or count < 1:
        raise ValueError("need length >= 1 and count >= 1")
    rng = random.Random(f"llmos shared prefix {seed}")
    out, prefix_of = [], {}
    for r in requests:
        if r.kind is Kind.INFERENCE:
            prefix_of[r.rid] = rng.randrange(count)
            r = replace(r, prompt_len=r.prompt_len + length)
        out.append(r)
    return out, SharedPrefixes(length, count, prefix_of, {r.rid: r.prompt_len for r in out if r.rid in prefix_of})
