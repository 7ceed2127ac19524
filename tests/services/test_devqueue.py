"""The kernel's device queue: per-process order kept, the policy picks the process."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmos.services.scheduler.devqueue import PolicyQueue
from llmos.services.scheduler.policies import BUILTIN


class Item:
    def __init__(self, owner: int, n: int):
        self.owner, self.n = owner, n


def run(queue: PolicyQueue, pushes: list[tuple[int, int]]) -> list[Item]:
    """Push (owner, count) groups at increasing times, then pop everything."""
    now = 0.0
    for owner, count in pushes:
        now += 0.01
        for n in range(count):
            queue.push(Item(owner, n), now)
    out = []
    while len(queue):
        now += 0.001
        out.append(queue.pop(now))
    assert queue.pop(now) is None
    return out


@pytest.mark.parametrize("name", sorted(BUILTIN))
@given(pushes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 6)), min_size=1, max_size=8))
def test_every_item_comes_out_once_in_its_owners_order(name, pushes):
    out = run(PolicyQueue(BUILTIN[name]()), pushes)
    assert len(out) == sum(count for _, count in pushes) == len(set(map(id, out)))
    for owner in {o for o, _ in pushes}:
        mine = [i.n for i in out if i.owner == owner]
        # an owner's items come out in the order they went in (restarting at 0 per group)
        groups = [count for o, count in pushes if o == owner]
        assert sorted(mine) == sorted(n for count in groups for n in range(count))


def test_fcfs_serves_streams_in_arrival_order_and_vtc_interleaves():
    fcfs = run(PolicyQueue(BUILTIN["fcfs"]()), [(1, 6), (2, 3)])
    assert [i.owner for i in fcfs] == [1] * 6 + [2] * 3
    vtc = run(PolicyQueue(BUILTIN["vtc"]()), [(1, 6), (2, 3)])
    assert [i.owner for i in vtc][:6] == [1, 2, 1, 2, 1, 2]


def test_yield_and_policy_switch_keep_every_item():
    q = PolicyQueue(BUILTIN["fcfs"]())
    for owner, n in [(1, 0), (1, 1), (2, 0)]:
        q.push(Item(owner, n), 0.0)
    assert q.requeue_to_tail(1, 1.0) == 2 and q.requeue_to_tail(9, 1.0) == 0
    assert q.pop(1.1).owner == 2  # owner 1 went behind
    q.set_policy(BUILTIN["vtc"](), 1.2)
    assert [(i.owner, i.n) for i in (q.pop(1.3), q.pop(1.4))] == [(1, 0), (1, 1)]
    q.push(Item(3, 0), 2.0)
    assert [i.owner for i in q.drain()] == [3] and len(q) == 0


@pytest.mark.parametrize("name", sorted(BUILTIN))
@given(pushes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 6)), min_size=1, max_size=8))
def test_order_names_the_process_each_pop_serves_next(name, pushes):
    """What sched_get shows as the queue is what the queue does: the head of `order()` is who pops next.

    (VTC: who has the least service counter; between equal counters `rank` puts the earlier arrival
    first where `candidates` takes the lower pid, so there only the counter is compared.)
    """
    q = PolicyQueue(BUILTIN[name]())
    now = 0.0
    for owner, count in pushes:
        now += 0.01
        for n in range(count):
            q.push(Item(owner, n), now)
    while len(q):
        order = q.order()
        assert sorted(owner for owner, _ in order) == sorted({i.owner for _, items in order for i in items})
        assert sum(len(items) for _, items in order) == len(q)
        now += 0.001
        counters = dict(getattr(q.policy, "counter", {}))
        popped = q.pop(now).owner
        if name == "vtc":
            assert counters[popped] == counters[order[0][0]]  # as little served as the head shown
        else:
            assert popped == order[0][0]


def test_order_follows_the_policy_after_a_yield():
    q = PolicyQueue(BUILTIN["fcfs"]())
    for owner in (1, 1, 2, 3):
        q.push(Item(owner, 0), 0.0)
    assert [(owner, len(items)) for owner, items in q.order()] == [(1, 2), (2, 1), (3, 1)]
    q.requeue_to_tail(1, 1.0)
    assert [owner for owner, _ in q.order()] == [2, 3, 1]
