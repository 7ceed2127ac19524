"""Measures of a finished simulation: latency, throughput and fairness.

Service is counted in weighted tokens, like VTC counts it: `w_in` per token
fed as prefill (prompt, recompute, training) plus `w_out` per token
generated. A process is *backlogged* at the end of a tick when it has a
runnable request that the tick did not serve.

The service gap of two processes f and g is the largest |W_f - W_g| over any
interval between the ends of two ticks at which both were backlogged at the
end of every tick in between, W being the service received in the interval.
This is the quantity the VTC paper bounds.

Over a whole finite workload every process eventually gets all it asked for,
so fairness is judged on *contended* service: what each process got in the
ticks at whose end it and at least one other process were backlogged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True, slots=True)
class Gap:
    """The largest service gap, between processes `pids`, in weighted tokens."""

    tokens: float
    pids: tuple[int, int] | None


def jain(values: Sequence[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all equal, 1/n when one gets all."""
    if not values:
        return 1.0
    squares = sum(v * v for v in values)
    if squares == 0:
        return 1.0
    return sum(values) ** 2 / (len(values) * squares)


def contended_service(ticks: Iterable[tuple[frozenset[int], dict[int, float]]]) -> dict[int, float]:
    """Service per process in the ticks where it and another process were backlogged.

    `ticks` gives, per tick, the backlogged processes at its end and the
    service each process got in it.
    """
    totals: dict[int, float] = {}
    for backlogged, service in ticks:
        if len(backlogged) >= 2:
            for pid in backlogged:
                totals[pid] = totals.get(pid, 0.0) + service.get(pid, 0.0)
    return totals


def max_service_gap(ticks: Iterable[tuple[frozenset[int], dict[int, float]]]) -> Gap:
    """The largest service gap between two backlogged processes.

    `ticks` gives, per tick in order, the backlogged processes at its end and
    the service each process got in it.
    """
    best = Gap(0.0, None)
    runs: dict[tuple[int, int], list[float]] = {}  # pair -> [difference, max, min] since the run began
    for backlogged, service in ticks:
        current = {}
        for f, g in combinations(sorted(backlogged), 2):
            run = runs.get((f, g))
            if run is None:
                run = [0.0, 0.0, 0.0]  # the run begins at the end of this tick
            else:
                d = run[0] + service.get(f, 0.0) - service.get(g, 0.0)
                run = [d, max(run[1], d), min(run[2], d)]
                if run[1] - run[2] > best.tokens:
                    best = Gap(run[1] - run[2], (f, g))
            current[(f, g)] = run
        runs = current
    return best
