"""The simulator, workloads, metrics, the cost model and the policy plugin."""

import io
import json

import pluggy
import pytest
from llmos.drivers import costmodel
from llmos.kernel import hookspecs
from llmos.services.scheduler import metrics, plugin, workload
from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace
from llmos.services.scheduler.policies import BUILTIN, FCFS, VTC
from llmos.services.scheduler.request import Kind
from llmos.services.scheduler.sim import Simulator, step_shape


def simulate(policy, requests, blocks=256):
    spec, model = costmodel.device("mocktpu"), costmodel.ModelShape()
    sched = Scheduler(policy, CountingBlockSpace(blocks, 16), Budget(64, 4))
    return Simulator(sched, lambda b: costmodel.step_time(spec, model, **step_shape(b)), requests).run()


def test_same_seed_same_trace_and_metrics():
    a = simulate(VTC(), workload.generate(30, procs=3, seed=7, rate=5000))
    b = simulate(VTC(), workload.generate(30, procs=3, seed=7, rate=5000))
    assert a.ticks == b.ticks and a.metrics() == b.metrics()
    c = simulate(VTC(), workload.generate(30, procs=3, seed=8, rate=5000))
    assert c.ticks != a.ticks


def test_simulation_accounts_for_every_request_and_token():
    requests = workload.generate(25, procs=2, seed=3, rate=2000, training=0.2)
    result = simulate(FCFS(), requests)
    m = result.metrics()
    assert sorted(r["id"] for r in m["requests"]) == [r.rid for r in sorted(requests, key=lambda r: r.rid)]
    assert m["output_tokens"] == sum(r.output_len for r in requests)
    for r in m["requests"]:
        assert r["completion"] > 0 and r["finished_at"] <= m["makespan_s"]
        assert (r["ttft"] is None) == (r["kind"] == "training")
    fed_prefill = sum(s.fed for t in result.ticks for s in t.served if not s.decode)
    assert sum(m["service"].values()) == fed_prefill + 2 * m["output_tokens"]
    # ticks are back to back or separated by idle time, never overlapping
    for prev, nxt in zip(result.ticks, result.ticks[1:]):
        assert prev.end <= nxt.start


def test_idle_gaps_jump_to_the_next_arrival():
    requests = workload.parse(['{"arrival": 0, "pid": 1, "prompt": 4, "output": 1}',
                               '{"arrival": 5.0, "pid": 1, "prompt": 4, "output": 1}'])
    result = simulate(FCFS(), requests)
    assert [t.start for t in result.ticks] == [0.0, 5.0]


def test_workload_generator_is_seeded_and_shaped():
    a = workload.generate(200, procs=4, seed=1, weights=[8, 1, 1, 1], priorities=3, max_len=512)
    assert a == workload.generate(200, procs=4, seed=1, weights=[8, 1, 1, 1], priorities=3, max_len=512)
    assert all(r.prompt_len <= 512 and 1 <= r.output_len <= 512 for r in a)
    assert [r.arrival for r in a] == sorted(r.arrival for r in a)
    heavy = sum(r.pid == 1 for r in a)
    assert heavy > 100  # about 8/11 of 200
    assert {r.priority for r in a} == {0, 1, 2}
    assert all(r.arrival == 0 for r in workload.generate(5, rate=0))
    with pytest.raises(ValueError):
        workload.generate(3, procs=2, weights=[1])


def test_workload_file_round_trip_and_errors(tmp_path):
    requests = workload.generate(10, procs=2, seed=2, training=0.3)
    buf = io.StringIO()
    workload.dump(requests, buf)
    path = tmp_path / "w.jsonl"
    path.write_text("# comment\n\n" + buf.getvalue())
    assert workload.load(path) == requests
    assert any(r.kind is Kind.TRAINING for r in requests)
    with pytest.raises(ValueError, match="line 1"):
        workload.parse([json.dumps({"arrival": 0, "pid": 1, "prompt": 4})])


def test_jain_and_gap():
    assert metrics.jain([3, 3, 3]) == 1.0
    assert metrics.jain([1, 0, 0, 0]) == 0.25
    ticks = [(frozenset({1, 2}), {1: 5.0}), (frozenset({1, 2}), {1: 5.0}),
             (frozenset({1, 2}), {2: 2.0}), (frozenset({1}), {1: 9.0}), (frozenset({1, 2}), {1: 4.0})]
    gap = metrics.max_service_gap(ticks)
    # the run starts at the end of tick 1: +5 then -2 -> largest swing 5; tick 5 starts a new run
    assert gap == metrics.Gap(5.0, (1, 2))
    assert metrics.contended_service(ticks) == {1: 14.0, 2: 2.0}


def test_cost_model_roofline():
    tpu, cpu = costmodel.device("mocktpu"), costmodel.device("cpu")
    assert tpu.peak_flops == 275e12 and tpu.mem_bandwidth == 1200e9 and tpu.mem_capacity == 32 << 30
    model = costmodel.ModelShape()
    assert 0.7e9 < model.params < 0.85e9
    # a small decode batch is memory bound: about the time to read the weights once
    decode = costmodel.step_time(tpu, model, forward_tokens=8, kv_read=8 * 100)
    weights = model.params * model.dtype_bytes / tpu.mem_bandwidth
    assert weights < decode < 1.2 * weights + tpu.step_overhead
    # a big prefill is compute bound: FLOPs over peak
    flops, nbytes = costmodel.step_cost(model, 8192, 0, 8192 * 4096, 0)
    assert flops / tpu.peak_flops > nbytes / tpu.mem_bandwidth
    assert costmodel.step_time(tpu, model, 8192, attended=8192 * 4096) == pytest.approx(
        tpu.step_overhead + flops / tpu.peak_flops)
    assert costmodel.step_time(cpu, model, 8) > costmodel.step_time(tpu, model, 8)
    assert costmodel.step_time(tpu, model, 0) == 0.0
    assert costmodel.op_time(tpu, 275e12, 0) == 1.0
    with pytest.raises(KeyError, match="presets"):
        costmodel.device("abacus")


def test_plugin_contributes_the_builtin_policies_through_the_hook():
    pm = pluggy.PluginManager("llmos")
    pm.add_hookspecs(hookspecs)
    pm.register(plugin)
    merged = {}
    for found in pm.hook.llmos_scheduler_policies():
        merged.update(found)
    assert set(merged) == {"fcfs", "rr", "priority", "mlfq", "vtc"} and merged == BUILTIN
