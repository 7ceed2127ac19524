"""The batching layer on the memory service's paged KV cache behaves as on plain block counts."""

import pytest

from llmos.drivers import costmodel
from llmos.services.memory.kv import KVCache
from llmos.services.scheduler import sim, workload
from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace, PagedBlockSpace
from llmos.services.scheduler.policies import BUILTIN


def simulate(policy: str, preemption: str, paged: bool, seed: int):
    requests = workload.generate(12, procs=3, seed=seed, rate=2000.0, prompt_mean=40, output_mean=12, max_len=120)
    if paged:
        kv = KVCache(24, 8, host_blocks=24 if preemption == "swap" else 0, watermark=0.0)
        owners = {r.rid: r.pid for r in requests}
        space = PagedBlockSpace(kv, owners.__getitem__)
    else:
        space = CountingBlockSpace(24, 8, 24 if preemption == "swap" else 0)
    sched = Scheduler(BUILTIN[policy](), space, Budget(64, 4), preemption)
    spec, model = costmodel.device("mocktpu"), costmodel.ModelShape()
    result = sim.Simulator(sched, lambda b: costmodel.step_time(spec, model, **sim.step_shape(b)), requests).run()
    return result, space


@pytest.mark.parametrize("policy", sorted(BUILTIN))
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_paged_and_counted_blocks_schedule_identically(policy, preemption):
    preempted = 0
    for seed in (1, 2):
        counted, _ = simulate(policy, preemption, paged=False, seed=seed)
        paged, space = simulate(policy, preemption, paged=True, seed=seed)
        assert repr(paged.ticks) == repr(counted.ticks) and paged.metrics() == counted.metrics()
        assert space.kv.num_free_blocks == space.kv.num_blocks  # every block came back
        preempted += sum(seq.preemptions for seq in paged.sequences)
    assert preempted > 0  # the workload runs the KV cache out, so preemption was exercised
