"""Policy-specific properties: the waiting bounds, priority order and VTC's service-gap bound."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmos.services.scheduler import metrics
from llmos.services.scheduler.policies import VTC, PriorityAging, RoundRobin
from llmos.testing import budgets, drive, workloads

PROPS = settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
AMPLE = 4096  # blocks: memory never binds, the condition of the bounds


def passed_over_streaks(run):
    """Longest run of consecutive ticks each sequence spent runnable but unserved."""
    streak, longest = {}, {}
    for t in run.ticks:
        served = {e.seq.rid for e in t.batch.entries}
        for seq in t.runnable:
            streak[seq.rid] = 0 if seq.rid in served else streak.get(seq.rid, 0) + 1
            longest[seq.rid] = max(longest.get(seq.rid, 0), streak[seq.rid])
    return longest


@PROPS
@given(workloads(max_size=10), budgets(), st.integers(1, 16))
def test_round_robin_waits_at_most_n_minus_1_quanta(requests, budget, quantum):
    """RR: a runnable sequence is passed over for at most (N - 1) * quantum consecutive ticks."""
    run = drive(RoundRobin(quantum), requests, budget, blocks=AMPLE)
    n = max(len(t.runnable) for t in run.ticks)
    assert max(passed_over_streaks(run).values()) <= (n - 1) * quantum


@PROPS
@given(workloads(max_size=10, priorities=4, max_arrival=0.05), budgets(), st.sampled_from([0.0, 20.0, 200.0]))
def test_priority_runs_the_highest_effective_priority_first(requests, budget, aging):
    """Priority: a passed-over sequence never outranks a served one, except a prefill when decodes spent the tokens."""
    policy = PriorityAging(aging)
    run = drive(policy, requests, budget, blocks=AMPLE)
    for t in run.ticks:
        served = t.batch.entries
        worst = max((policy.key(e.seq, 0.0), e.seq.rid) for e in served)
        for s in t.passed_over:
            if (policy.key(s.seq, 0.0), s.seq.rid) < worst:
                assert not s.decode and t.batch.tokens == budget.tokens, f"{s} skipped ahead of its rank"


@PROPS
@given(workloads(max_size=10, priorities=4, max_arrival=0.05), budgets())
def test_priority_aging_bounds_overtaking(requests, budget):
    """Priority with aging: nobody overtakes a waiting sequence if it arrived more than (p_max - p_min) / aging later."""
    aging = 100.0
    horizon = 3 / aging  # priorities span 0..3
    run = drive(PriorityAging(aging), requests, budget, blocks=AMPLE)
    for t in run.ticks:
        for s in t.passed_over:
            for e in t.batch.entries:
                if e.seq.request.arrival > s.seq.request.arrival + horizon:
                    assert not s.decode and t.batch.tokens == budget.tokens


@PROPS
@given(workloads(min_size=4, max_size=16, procs=3, max_prompt=40, max_output=12, training=False,
                 max_arrival=0.01), budgets(max_tokens=32, max_seqs=4))
def test_vtc_service_gap_within_its_bound(requests, budget):
    """VTC: two processes backlogged throughout an interval get service within 2U of each other."""
    policy = VTC()
    run = drive(policy, requests, budget, blocks=AMPLE)
    ticks = []
    for t in run.ticks:
        service = {}
        for e in t.batch.entries:
            service[e.seq.pid] = service.get(e.seq.pid, 0.0) + policy.w_in * e.prefill + policy.w_out * e.emits
        ticks.append((frozenset(s.seq.pid for s in t.passed_over), service))
    gap = metrics.max_service_gap(ticks)
    assert gap.tokens <= policy.gap_bound(budget.tokens, budget.seqs)


def test_vtc_gap_beats_fcfs_with_one_heavy_process():
    """With one process flooding the device, FCFS lets it run ahead; VTC keeps the light one level."""
    from llmos.services.scheduler.batching import Budget
    from llmos.services.scheduler.policies import FCFS
    from llmos.services.scheduler.request import Request
    heavy = [Request(i, 1, 0.0, 16, 8) for i in range(40)]
    light = [Request(100 + i, 2, 0.0, 16, 8) for i in range(10)]
    gaps = {}
    for policy in (FCFS(), VTC()):
        run = drive(policy, heavy + light, Budget(32, 4), blocks=AMPLE)
        ticks = [(frozenset(s.seq.pid for s in t.passed_over),
                  {p: sum(e.prefill + 2 * e.emits for e in t.batch.entries if e.seq.pid == p) for p in (1, 2)})
                 for t in run.ticks]
        gaps[policy.name] = metrics.max_service_gap(ticks).tokens
    assert gaps["vtc"] <= VTC().gap_bound(32, 4) < gaps["fcfs"]
