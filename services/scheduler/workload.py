"""Workloads for the simulator and benchmarks: a seeded generator and a JSON-lines format.

A workload is a list of `Request`s sorted by arrival. `generate` draws one
from a seed: Poisson arrivals, log-normal prompt lengths, heavy-tailed
(Pareto) output lengths, each process sending a share of the requests set by
its weight. The same arguments always give the same list.

The file format has one JSON object per line, e.g.::

    {"arrival": 0.0, "pid": 1, "prompt": 128, "output": 64}
    {"arrival": 0.01, "pid": 2, "prompt": 512, "output": 0, "kind": "training"}

with optional "priority" (default 0) and "id" (default: the line's index).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
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
