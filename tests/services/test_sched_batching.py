"""Unit tests of the batching layer: chunked prefill, decode first, preemption, training, static batching."""

import pytest
from llmos.services.scheduler.batching import Budget, Preemption, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace
from llmos.services.scheduler.policies import FCFS, MLFQ, VTC, PriorityAging
from llmos.services.scheduler.request import Kind, Request, Sequence, State


def step(sched, now=0.0):
    """One tick and its completion; returns (batch, finished)."""
    batch = sched.tick(now)
    return batch, sched.complete(batch, now + 1.0)


def test_long_prompt_is_chunked_and_emits_after_the_last_chunk():
    sched = Scheduler(FCFS(), CountingBlockSpace(64, 4), Budget(32, 4))
    seq = sched.submit(Request(0, 1, 0.0, 100, 2), 0.0)
    fed = []
    for _ in range(4):
        batch, _ = step(sched)
        fed.append((batch.entries[0].fed, batch.entries[0].emits))
    assert fed == [(32, False), (32, False), (32, False), (4, True)]
    assert seq.generated == 1
    batch, finished = step(sched)
    assert batch.entries[0].decode and finished == [seq]


def test_decodes_get_tokens_before_new_prefills():
    sched = Scheduler(FCFS(), CountingBlockSpace(64, 4), Budget(8, 4))
    a = sched.submit(Request(0, 1, 0.0, 4, 10), 0.0)
    b = sched.submit(Request(1, 1, 0.0, 4, 10), 0.0)
    step(sched)  # both prefill 4 tokens and emit their first token
    late = sched.submit(Request(2, 1, 0.0, 50, 3), 0.0)
    batch, _ = step(sched)
    by_rid = {e.seq.rid: e for e in batch.entries}
    assert by_rid[a.rid].decode and by_rid[b.rid].decode
    assert by_rid[late.rid].fed == 8 - 2  # what the two decodes left of the budget


def test_budgets_cap_the_batch():
    sched = Scheduler(FCFS(), CountingBlockSpace(1000, 4), Budget(10, 3))
    for i in range(6):
        sched.submit(Request(i, 1, 0.0, 3, 2), 0.0)
    batch, _ = step(sched)
    assert len(batch) == 3 and batch.tokens == 9
    assert [e.seq.rid for e in batch.entries] == [0, 1, 2]


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_high_priority_preempts_the_lowest_ranked_holder_and_the_victim_resumes(mode):
    space = CountingBlockSpace(6, 4, host_total=6)
    sched = Scheduler(PriorityAging(aging=0.0), space, Budget(64, 4), mode)
    anchor = sched.submit(Request(0, 1, 0.0, 7, 4, priority=1), 0.0)  # 2 blocks, held longest
    low = sched.submit(Request(1, 1, 0.0, 7, 4, priority=0), 0.0)  # 2 blocks, ranks last
    mid = sched.submit(Request(2, 1, 0.0, 7, 4, priority=1), 0.0)  # 2 blocks
    step(sched)
    assert space.free() == 0
    urgent = sched.submit(Request(3, 2, 0.0, 8, 1, priority=5), 0.0)
    batch, _ = step(sched)
    assert [(p.victim.rid, p.beneficiary.rid) for p in batch.preempted] == [(low.rid, urgent.rid)]
    assert batch.preempted[0].mode is Preemption(mode)
    assert low.state is (State.SWAPPED if mode == "swap" else State.WAITING)
    assert low.rid not in {e.seq.rid for e in batch.entries}
    generated = low.generated
    while len(sched):
        step(sched)
    assert low.generated == 4 and generated == 1 and low.preemptions == 1
    assert anchor.preemptions == mid.preemptions == 0
    assert space.free() == space.total


def test_a_recomputed_sequence_refeeds_prompt_and_output_then_continues():
    space = CountingBlockSpace(5, 4)
    sched = Scheduler(PriorityAging(aging=0.0), space, Budget(64, 4))
    sched.submit(Request(0, 1, 0.0, 8, 8, priority=1), 0.0)
    victim = sched.submit(Request(1, 1, 0.0, 4, 6, priority=0), 0.0)
    while True:
        batch, _ = step(sched)
        if batch.preempted:
            break
    assert [p.victim for p in batch.preempted] == [victim] and victim.computed == 0
    before = victim.generated
    assert before >= 1
    fed = []
    while victim.generated == before:
        batch, _ = step(sched)
        fed += [(e.start, e.fed) for e in batch.entries if e.seq is victim]
    # recompute: prompt (4) and the outputs so far are fed again from position 0, then one more token
    assert fed[0][0] == 0 and sum(n for _, n in fed) == 4 + before
    while len(sched):
        step(sched)
    assert victim.generated == 6 and space.free() == space.total


def test_anchor_breaks_a_memory_deadlock_between_ranks():
    # Two sequences that do not fit together; VTC keeps reordering them, the
    # anchor (the first to take blocks) may still preempt the other to finish.
    space = CountingBlockSpace(12, 4)
    sched = Scheduler(VTC(), space, Budget(1, 1))
    a = sched.submit(Request(0, 1, 0.0, 25, 8), 0.0)
    b = sched.submit(Request(1, 2, 0.0, 17, 1), 0.0)
    ticks = 0
    while len(sched) and ticks < 500:
        batch, _ = step(sched)
        assert batch.entries
        ticks += 1
    assert a.done and b.done


def test_training_steps_share_the_device_with_inference():
    sched = Scheduler(FCFS(), CountingBlockSpace(64, 4), Budget(16, 4))
    infer = sched.submit(Request(0, 1, 0.0, 4, 5), 0.0)
    train = sched.submit(Request(1, 2, 0.0, 40, 0, kind=Kind.TRAINING), 0.0)
    batch, _ = step(sched)
    assert {e.seq.rid: e.fed for e in batch.entries} == {0: 4, 1: 12}
    batch, _ = step(sched)
    assert {e.seq.rid: e.fed for e in batch.entries} == {0: 1, 1: 15}
    while len(sched):
        step(sched)
    assert train.computed == 40 and train.generated == 0 and infer.generated == 5
    assert train.first_token_at is None and train.finished_at is not None


def test_static_batching_admits_nobody_until_the_batch_drains():
    sched = Scheduler(FCFS(), CountingBlockSpace(64, 4), Budget(64, 2), static=True)
    short = sched.submit(Request(0, 1, 0.0, 2, 1), 0.0)
    long = sched.submit(Request(1, 1, 0.0, 2, 5), 0.0)
    third = sched.submit(Request(2, 1, 0.0, 2, 1), 0.0)
    _, finished = step(sched)
    assert finished == [short]
    for _ in range(4):
        batch, _ = step(sched)
        assert [e.seq for e in batch.entries] == [long]
    assert long.done
    batch, _ = step(sched)
    assert [e.seq for e in batch.entries] == [third]


def test_set_policy_keeps_queued_work_and_progress():
    sched = Scheduler(FCFS(), CountingBlockSpace(64, 4), Budget(8, 2))
    seqs = [sched.submit(Request(i, 1 + i % 2, 0.0, 6, 3), 0.0) for i in range(5)]
    step(sched)
    progress = [(s.computed, s.generated) for s in seqs]
    sched.set_policy(VTC(), 1.0)
    assert sched.policy.name == "vtc" and [(s.computed, s.generated) for s in seqs] == progress
    while len(sched):
        step(sched)
    assert all(s.done and s.generated == 3 for s in seqs)


def test_cancel_frees_blocks_and_forgets_the_request():
    space = CountingBlockSpace(16, 4)
    sched = Scheduler(FCFS(), space, Budget(16, 2))
    seq = sched.submit(Request(0, 1, 0.0, 9, 4), 0.0)
    step(sched)
    assert space.free() == 13
    assert sched.cancel(0) is seq and space.free() == 16 and len(sched) == 0
    assert sched.cancel(0) is None


def test_misuse_is_refused():
    sched = Scheduler(FCFS(), CountingBlockSpace(4, 4), Budget(8, 2))
    with pytest.raises(ValueError, match="more KV blocks"):
        sched.submit(Request(0, 1, 0.0, 16, 2), 0.0)
    sched.submit(Request(1, 1, 0.0, 4, 2), 0.0)
    with pytest.raises(ValueError, match="already queued"):
        sched.submit(Request(1, 1, 0.0, 4, 2), 0.0)
    batch = sched.tick(0.0)
    with pytest.raises(RuntimeError):
        sched.tick(0.0)
    with pytest.raises(RuntimeError):
        sched.set_policy(VTC(), 0.0)
    sched.complete(batch, 1.0)
    with pytest.raises(RuntimeError):
        sched.complete(batch, 1.0)
    with pytest.raises(ValueError):
        Request(2, 1, 0.0, 4, 0)
    with pytest.raises(ValueError):
        Budget(0, 1)


def test_vtc_lifts_a_returning_process_to_the_backlogged_minimum():
    policy = VTC()
    sched = Scheduler(policy, CountingBlockSpace(1000, 4), Budget(4, 1))
    for i in range(6):
        sched.submit(Request(i, 1, 0.0, 4, 4), 0.0)
        sched.submit(Request(100 + i, 2, 0.0, 4, 4), 0.0)
    for _ in range(10):
        step(sched)
    assert policy.backlogged == {1, 2}
    floor = min(policy.counter[1], policy.counter[2])
    sched.submit(Request(200, 3, 0.0, 4, 4), 0.0)
    assert policy.counter[3] == floor


def test_mlfq_demotes_a_spent_allotment_and_the_boost_restores_ticket_order():
    policy = MLFQ(levels=3, quantum=2, boost=10.0)
    a, b, c, d = (Sequence(Request(rid, rid, 0.0, 4, 4)) for rid in range(4))

    def tick(now, serve=None, tokens=0):
        """Walk the whole order (charging `serve` when it comes up) and close the tick; return the order."""
        seen = []
        for seq in policy.candidates(now):
            seen.append(seq.rid)
            if seq is serve:
                policy.charge(seq, tokens, 0, now)
        policy.end_tick(now)
        return seen

    for seq in (a, b, c):
        policy.add(seq, 0.0)
    assert tick(0.0, a, 2) == [0, 1, 2]  # a's level-0 allotment (2 tokens) is spent: level 1, a new ticket
    policy.add(d, 0.0)
    assert [policy.level(s) for s in (a, b, c, d)] == [1, 0, 0, 0]
    assert tick(1.0, a, 4) == [1, 2, 3, 0]  # level 1's allotment is 4 tokens: a sinks to the bottom level
    assert policy.rank(b) < policy.rank(d) < policy.rank(a)
    assert tick(2.0, a, 16) == [1, 2, 3, 0] and policy.level(a) == 2  # the bottom level keeps it
    e = Sequence(Request(4, 4, 0.0, 4, 4))
    policy.add(e, 2.0)  # e's ticket is newer than a's
    assert tick(3.0) == [1, 2, 3, 4, 0]
    assert tick(10.0) == [1, 2, 3, 0, 4]  # the boost: all at level 0, in ticket order
    assert [policy.level(s) for s in (a, b, c, d, e)] == [0, 0, 0, 0, 0]


def test_vtc_ranks_tied_counters_in_the_order_it_runs_them():
    """`sched` shows sequences sorted by rank: at equal counters that order must be the one candidates yields."""
    policy = VTC()
    early, late = Sequence(Request(0, 5, 0.0, 4, 4)), Sequence(Request(1, 2, 1.0, 4, 4))  # pid 5 came first
    for seq in (early, late):
        policy.add(seq, 1.0)
    assert policy.counter[5] == policy.counter[2]
    runs = [seq.rid for seq in policy.candidates(1.0)]
    assert runs == [seq.rid for seq in sorted((early, late), key=policy.rank)] == [1, 0]
