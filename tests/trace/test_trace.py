"""Traces and plots: a real kernel log and a simulator run, exported and checked against the trace-event format."""

import itertools
import json
import subprocess
import sys
import threading

import pytest
import torch
from conftest import occupy_device, start_kernel
from llmos.drivers import costmodel
from llmos.services.memory.kv import KVCache
from llmos.services.scheduler import sim as simulator
from llmos.services.scheduler import workload
from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import PagedBlockSpace
from llmos.services.scheduler.policies.rr import RoundRobin
from llmos.userland import Client
from llmos.userland.errors import LlmosError
from llmos.userland.trace import from_sim, to_chrome
from llmos.userland.trace.plot import plot
from llmos.userland.trace.timeline import Slice, lanes

LLMOS = [sys.executable, "-m", "llmos.userland.cli.main"]
PHASES = {"X", "i", "C", "M"}
METADATA = {"process_name", "process_sort_index", "thread_name"}
SHARED = "a prompt they share "  # 20 bytes: 5 full blocks of 4


@pytest.fixture(scope="module")
def kernel_log(runtime_dir, tmp_path_factory):
    """A debug log of two processes sharing cpu0 (matmuls), one of them failing a call."""
    log = tmp_path_factory.mktemp("trace") / "kernel.log"
    kp = start_kernel(runtime_dir, "traced", log_level="debug", log_file=str(log))
    pids = {}

    def work(name: str, n: int) -> None:
        with Client(kp.address, name=name) as c:
            pids[name] = c.pid
            a = c.put(torch.randn(n, n)).handle
            for _ in range(3):
                c.free(c.compute("matmul", a, a).handle)
            if name == "mm0":
                with pytest.raises(LlmosError):
                    c.free(999)

    try:
        threads = [threading.Thread(target=work, args=(f"mm{i}", 200 + 100 * i)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        assert kp.stop() == 0
    return log, pids


def check_trace_events(trace: dict) -> None:
    """The trace-event format (JSON object form) as Perfetto and chrome://tracing read it."""
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    json.loads(json.dumps(trace, allow_nan=False))  # plain JSON: no NaN or infinity
    by_thread: dict[tuple[int, int], list[dict]] = {}
    for e in trace["traceEvents"]:
        assert e["ph"] in PHASES, e
        assert isinstance(e["name"], str) and isinstance(e["pid"], int), e
        if e["ph"] == "M":
            assert e["name"] in METADATA and isinstance(e["args"], dict), e
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0 and isinstance(e["tid"], int), e
            by_thread.setdefault((e["pid"], e["tid"]), []).append(e)
        elif e["ph"] == "C":
            assert e["args"] and all(isinstance(v, (int, float)) for v in e["args"].values()), e
        elif e["ph"] == "i":
            assert e["s"] in ("g", "p", "t"), e
    for slices in by_thread.values():  # complete events on one thread must not partially overlap
        slices.sort(key=lambda e: e["ts"])
        for a, b in itertools.pairwise(slices):
            assert b["ts"] >= a["ts"] + a["dur"] - 1e-3 or b["ts"] + b["dur"] <= a["ts"] + a["dur"], (a, b)


def names(trace: dict, key: str) -> dict[int, str]:
    return {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == key}


def test_kernel_log_has_timed_events(kernel_log):
    log, pids = kernel_log
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = {e["event"] for e in events if "t" in e}
    assert {"syscall", "syscall.exit", "device.busy", "device.idle", "mem.alloc", "mem.free", "process.exit"} <= kinds
    busy = [e for e in events if e["event"] == "device.busy" and e.get("op") == "matmul"]
    assert {e["pid"] for e in busy} == set(pids.values())
    failed = [e for e in events if e["event"] == "syscall.exit" and e.get("errno")]
    assert [(e["pid"], e["syscall"], e["errno"]) for e in failed] == [(pids["mm0"], "free", "EBADF")]


def test_export_has_a_track_per_device_and_process(kernel_log, tmp_path):
    log, pids = kernel_log
    out = tmp_path / "trace.json"
    subprocess.run([*LLMOS, "trace", "export", str(log), "-o", str(out)], check=True, capture_output=True, timeout=60)
    trace = json.loads(out.read_text())
    check_trace_events(trace)
    procs = names(trace, "process_name")
    assert "device cpu0" in procs.values()
    assert procs[pids["mm0"]] == f"pid {pids['mm0']} mm0" and procs[pids["mm1"]] == f"pid {pids['mm1']} mm1"
    device = next(pid for pid, name in procs.items() if name == "device cpu0")
    events = trace["traceEvents"]
    matmuls = [e for e in events if e["ph"] == "X" and e["pid"] == device and e["name"] == "matmul"]
    assert len(matmuls) == 6 and {e["args"]["pid"] for e in matmuls} == set(pids.values())
    calls = {(e["pid"], e["name"]) for e in events if e["ph"] == "X" and e["cat"] == "syscall"}
    assert {(pid, "compute") for pid in pids.values()} <= calls
    exits = [e for e in events if e["ph"] == "i" and e["name"] == "exit"]
    assert {e["pid"] for e in exits} >= set(pids.values())
    memory = [e["args"]["used"] for e in events if e["ph"] == "C" and e["pid"] == device]
    assert max(memory) >= 300 * 300 * 4 and memory[-1] == 0


def test_plot_writes_a_png(kernel_log, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    subprocess.run([*LLMOS, "trace", "plot", str(kernel_log[0]), "-o", str(out)], check=True, capture_output=True, timeout=60)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_result_becomes_the_same_trace(tmp_path):
    requests = workload.generate(8, procs=2, seed=3, rate=1000, prompt_mean=24, output_mean=6, max_len=512, priorities=1)
    owners = {r.rid: r.pid for r in requests}
    blocks = PagedBlockSpace(KVCache(64, 16, watermark=0.0), owners.__getitem__)
    scheduler = Scheduler(RoundRobin(), blocks, Budget(32, 2), "recompute")
    spec, model = costmodel.device("mocktpu"), costmodel.ModelShape()
    result = simulator.Simulator(scheduler, lambda b: costmodel.step_time(spec, model, **simulator.step_shape(b)), requests).run()
    tl = from_sim(result, "mocktpu0")
    trace = to_chrome(tl)
    check_trace_events(trace)
    served = sum(len(t.served) for t in result.ticks)
    assert len(tl.work) == served and tl.unit == "simulated s"
    for tick in result.ticks:  # a batch's shares of the device add up to all of it
        shares = [s.share for s in tl.work if s.args["tick"] == tick.tick]
        assert shares[0][0] == 0.0 and shares[-1][1] == pytest.approx(1.0)
    assert {s.name for s in tl.calls} == {f"r{r.rid}" for r in requests}
    assert tl.memory["mocktpu0"][-1][1] == 0  # every request finished and freed its KV
    pytest.importorskip("matplotlib")
    from llmos.userland.trace.plot import plot

    plot(tl, tmp_path / "sim.png")
    assert (tmp_path / "sim.png").stat().st_size > 0


def test_lanes_keep_overlapping_slices_apart():
    slices = [Slice(0, 10, 1, "a"), Slice(2, 3, 1, "b"), Slice(5, 12, 1, "c"), Slice(10, 11, 1, "d")]
    assert lanes(slices) == [0, 1, 1, 0]


def test_batched_generation_shows_every_process_in_the_step_preemptions_swaps_and_the_hit_rate(runtime_dir, tmp_path):
    import asyncio

    from llmos.userland import AsyncClient
    from llmos.userland.trace import from_log

    log = tmp_path / "kernel.log"
    kp = start_kernel(runtime_dir, "traced-gen", log_level="debug", log_file=str(log), drivers=["cpu"])
    config = dict(d_model=32, n_layers=2, n_heads=2, max_len=64)
    try:
        with Client(kp.address, name="loader") as c:
            # 3 calls of 22 + 29 positions (13 blocks), 5 of them shared, in 20 blocks: some are swapped out
            model = c.model_load("cpu", "tinygpt", config=config, kv_blocks=20, block_size=4, preempt="swap").model
            c.generate(model, SHARED, max_tokens=1)  # names the 5 full blocks of SHARED in the prefix cache

            async def three():
                clients = [AsyncClient(kp.address, name=f"gen{i}") for i in range(3)]
                for a in clients:
                    await a.__aenter__()
                handles = [c.share(model, a.pid) for a in clients]
                busy = await occupy_device(clients[0])
                done = await asyncio.gather(*(a.generate(h, f"{SHARED}p{i}", max_tokens=30) for i, (a, h) in enumerate(zip(clients, handles))))
                await busy
                for a in clients:
                    await a.__aexit__(None, None, None)
                return [a.pid for a in clients], done

            gen_pids, done = [], []
            for _ in range(3):  # on a loaded machine the three calls may reach the kernel too far apart to
                pids, calls = asyncio.run(three())  # overlap (none is preempted then): the trace keeps every try
                gen_pids += pids
                done += calls
                if sum(d.preemptions for d in calls):
                    break
            assert sum(d.preemptions for d in calls) > 0 and sum(d.swaps for d in calls) > 0
            (pool,) = [p for d in c.memstat() for p in d.kv_pools if p.pool.startswith("model")]
    finally:
        assert kp.stop() == 0
    tl = from_log(log)
    steps = [s for s in tl.work if s.name == "model_step"]
    by_start: dict[float, list] = {}
    for s in steps:
        by_start.setdefault(s.start, []).append(s)
    shared = [group for group in by_start.values() if len(group) > 1]
    in_shared = {s.pid for group in shared for s in group}
    assert set(pids) <= in_shared <= set(gen_pids)  # one step served several processes
    for group in shared:  # stacked in the device's row: shares tile [0, 1]
        spans = sorted(s.share for s in group)
        assert spans[0][0] == 0.0 and spans[-1][1] == 1.0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    preempts = [i for i in tl.instants if i.name == "preempt"]
    assert len(preempts) == sum(d.preemptions for d in done) and {i.args["victim"] for i in preempts} <= set(gen_pids)
    swaps = [i for i in tl.instants if i.name == "swap out"]
    assert len(swaps) == sum(d.swaps for d in done) and {i.args["pid"] for i in swaps} <= set(gen_pids)
    assert len([i for i in tl.instants if i.name == "swap in"]) == len(swaps)  # every swapped call came back
    lookups = tl.prefix["cpu0"]  # the warm call's, then the three's (and their looks after recompute, if any)
    assert lookups[-1][1:] == (pool.prefix_tokens, pool.prefix_hits)  # the counts so far, as memstat gives them
    assert pool.prefix_hits >= 3 * 20 and tl.hit_rate("cpu0")[-1][1] == pytest.approx(100 * pool.prefix_hits / pool.prefix_tokens)
    trace = to_chrome(tl)
    check_trace_events(trace)
    rates = [e for e in trace["traceEvents"] if e["name"] == "prefix-cache hit rate (%)"]
    assert len(rates) == len(lookups) and rates[0]["args"]["hit rate"] == 0.0  # the warm call found nothing
    kv = [used for _, used in tl.kv["cpu0"]]  # the model's KV blocks in use, as they changed
    assert tl.kv_total["cpu0"] == 20 and max(kv) <= 20 and max(kv) >= 13 and kv[-1] == 0
    assert all(a != b for a, b in itertools.pairwise(kv))  # traced only when the count changed
    plot(tl, tmp_path / "gen.png")  # the KV panel and the hit rate draw
    assert (tmp_path / "gen.png").stat().st_size > 10_000


def test_a_lone_generation_runs_several_decode_steps_per_work_item(runtime_dir, tmp_path):
    from llmos.kernel.batcher import MULTI_STEP
    from llmos.userland.trace import from_log

    log = tmp_path / "kernel.log"
    kp = start_kernel(runtime_dir, "traced-lone", log_level="debug", log_file=str(log))
    try:
        with Client(kp.address, name="lone") as c:
            model = c.model_load("cpu", "tinygpt", config=dict(d_model=32, n_layers=1, n_heads=2, max_len=64)).model
            done = c.generate(model, "x", max_tokens=41)
    finally:
        assert kp.stop() == 0
    steps = [s for s in from_log(log).work if s.name == "model_step"]
    assert done.tokens == 41 and len(steps) == 1 + -(-40 // MULTI_STEP)  # the prompt's step, then up to MULTI_STEP per item


def test_plot_has_no_row_for_an_idle_device_and_a_kv_panel_instead_of_a_flat_memory_line(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from llmos.userland.trace.plot import plot as draw
    from llmos.userland.trace.timeline import Slice, Timeline

    tl = Timeline(devices=["cpu0", "mocktpu0"], work=[Slice(0.0, 1.0, 3, "model_step", device="cpu0")],
                  memory={"cpu0": [(0.0, 7 << 20), (1.0, 7 << 20)], "mocktpu0": [(0.0, 0)]},
                  kv={"cpu0": [(0.0, 0), (0.2, 5), (0.8, 0)]}, kv_total={"cpu0": 64})
    figures = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: figures.append(fig))
    draw(tl, tmp_path / "p.png")
    gantt, *below = figures[0].axes
    assert [t.get_text() for t in gantt.get_yticklabels()] == ["cpu0"]  # mocktpu0 did nothing: no row
    assert [ax.get_ylabel() for ax in below] == ["KV blocks in use"]  # memory never changed: no panel


def test_a_window_cuts_and_shifts_the_timeline():
    from llmos.userland.trace.timeline import Instant, Timeline

    tl = Timeline(devices=["cpu0"], memory={"cpu0": [(0.0, 10), (2.0, 30), (9.0, 0)]})
    tl.work = [Slice(1.0, 3.0, 1, "a", "cpu0"), Slice(4.0, 5.0, 2, "b", "cpu0"), Slice(8.0, 9.0, 3, "c", "cpu0")]
    tl.instants = [Instant(4.5, "preempt", device="cpu0"), Instant(7.5, "exit", pid=2)]
    w = tl.window(2.5, 6.0)
    assert [(s.name, s.start, s.end) for s in w.work] == [("a", 0.0, 0.5), ("b", 1.5, 2.5)]
    assert [(i.name, i.t) for i in w.instants] == [("preempt", 2.0)]
    assert w.memory["cpu0"] == [(0.0, 30), (3.5, 30)]  # what was in use at the start, held to the end
    assert len(tl.work) == 3  # the original is untouched
