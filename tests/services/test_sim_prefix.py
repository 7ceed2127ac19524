"""`llmos sim` models the kernel's prefix cache: shared system prompts, hits, hit rate, evictions."""

import json
import re

import pytest
from llmos.drivers import costmodel
from llmos.services.memory.kv import KVCache
from llmos.services.scheduler import workload
from llmos.services.scheduler.batching import Budget, Scheduler
from llmos.services.scheduler.blocks import CountingBlockSpace, PagedBlockSpace
from llmos.services.scheduler.policies import FCFS
from llmos.services.scheduler.request import Kind
from llmos.services.scheduler.sim import Simulator, step_shape
from llmos.services.scheduler.workload import SharedPrefixes
from llmos.userland.cli import main

LAB = ["sim", "--policy", "fcfs", "-s", "3", "-n", "8", "--procs", "4", "--rate", "0",
       "--shared-prefix", "48", "--prefixes", "2", "--blocks", "64", "--block-size", "16"]


def simulate(requests, prefixes=None, blocks=64, budget=(64, 2)):
    """Run `requests` on a paged KV cache of `blocks` blocks of 16 tokens; the result and the space."""
    spec, model = costmodel.device("mocktpu"), costmodel.ModelShape()
    owners = {r.rid: r.pid for r in requests}
    space = PagedBlockSpace(KVCache(blocks, 16, watermark=0.0), owners.__getitem__)
    sched = Scheduler(FCFS(), space, Budget(*budget))
    step = lambda b: costmodel.step_time(spec, model, **step_shape(b))  # noqa: E731
    return Simulator(sched, step, requests, prefixes=prefixes).run(), space


def two(second_at):
    """Two requests of 8 own prompt tokens after one 32-token system prompt; the second arrives at `second_at`."""
    return workload.share_prefix(workload.parse([
        '{"arrival": 0, "pid": 1, "prompt": 8, "output": 2}',
        f'{{"arrival": {second_at}, "pid": 2, "prompt": 8, "output": 2}}']), 32)


def sim(capsys, *argv):
    """`llmos sim ARGV`'s standard output."""
    assert main.main(list(argv)) == 0
    return capsys.readouterr().out


def test_token_ids_share_the_system_prompt_and_nothing_else():
    requests, ids = workload.share_prefix(workload.generate(6, seed=1), 20, count=2, seed=5)
    assert [r.prompt_len for r in requests] == [r.prompt_len + 20 for r in workload.generate(6, seed=1)]
    for r in requests:
        prompt = ids.prompt(r.rid)
        assert len(prompt) == r.prompt_len and prompt[:20] == ids.system_prompt(ids.prefix_of[r.rid])
        assert ids.context_of(r.rid, 3)[: r.prompt_len] == prompt and len(ids.context_of(r.rid, 3)) == r.prompt_len + 3
    own = [t for r in requests for t in ids.prompt(r.rid)[20:] + ids.context_of(r.rid, 4)[-4:]]
    assert len(set(own)) == len(own)  # own parts and outputs are never shared
    assert not set(ids.system_prompt(0)) & set(ids.system_prompt(1)) & set(own)
    assert workload.share_prefix(workload.generate(6, seed=1), 20, count=2, seed=5) == (requests, ids)
    draws = [workload.share_prefix(workload.generate(40, seed=1), 20, 4, seed=s)[1].prefix_of for s in (5, 6)]
    assert draws[0] != draws[1] and set(draws[0].values()) == {0, 1, 2, 3}
    training = workload.generate(10, seed=2, training=0.5)
    longer, ids = workload.share_prefix(training, 8)
    for old, new in zip(training, longer):  # training steps hold no KV: no system prompt, no ids
        expected = (0, False) if old.kind is Kind.TRAINING else (8, True)
        assert (new.prompt_len - old.prompt_len, new.rid in ids.prefix_of) == expected
    with pytest.raises(ValueError):
        workload.share_prefix(training, 0)


def test_a_later_prompt_finds_the_whole_system_prompt():
    requests, ids = two(second_at=1.0)  # the first is done long before
    result, space = simulate(requests, ids)
    hits = [(t.tick, t.hits) for t in result.ticks if t.hits]
    assert len(hits) == 1 and hits[0][1] == ((1, 32),)
    first = next(s for t in result.ticks for s in t.served if s.rid == 1)
    assert (first.start, first.fed) == (32, 8)  # only its own 8 tokens are prefilled
    m = result.metrics()
    assert (m["prefix_hit_tokens"], m["prefix_lookup_tokens"]) == (32, 40 + 40) == (space.hit, space.looked_up)
    assert m["prefix_hit_rate"] == 32 / 80 and [r["cached"] for r in m["requests"]] == [0, 32]


def test_a_prompt_computed_in_the_same_step_misses_and_a_chunked_one_finds_what_was_written():
    together, _ = simulate(*two(second_at=0))  # both prefilled in tick 1: nothing is named yet
    assert together.metrics()["prefix_hit_tokens"] == 0 and together.metrics()["prefix_lookup_tokens"] == 80
    chunked, space = simulate(*two(second_at=0), budget=(16, 2))
    # tick 1 feeds r0 positions 0..15 (r1 looks up, misses, gets no tokens); tick 2 r1 finds that block only
    assert [t.hits for t in chunked.ticks[:2]] == [(), ((1, 16),)]
    assert (space.hit, space.looked_up) == (16, 40 + 40)  # r1's second lookup replaces its first in the counts


def test_the_cache_changes_nothing_but_hits_when_every_prompt_has_its_own_system_prompt():
    requests, ids = workload.share_prefix(workload.generate(12, procs=3, seed=4, rate=3000), 32)
    own = SharedPrefixes(32, len(requests), {r.rid: r.rid for r in requests}, ids.prompt_len)
    cached, space = simulate(requests, own, blocks=256)
    plain, _ = simulate(requests, None, blocks=256)
    assert space.looked_up == sum(r.prompt_len for r in requests) and space.hit == 0  # each prompt counted once
    assert cached.metrics()["prefix_hit_rate"] == 0.0 and cached.metrics()["preemptions"] == 0
    assert [(t.start, t.end, t.served) for t in cached.ticks] == [(t.start, t.end, t.served) for t in plain.ticks]
    assert "prefix_hit_rate" not in plain.metrics() and all(t.hits == () and t.evicted == 0 for t in plain.ticks)
    shared, _ = simulate(requests, ids, blocks=256)
    assert shared.end < plain.end  # with one system prompt, every later prompt skips it
    with pytest.raises(TypeError, match="PagedBlockSpace"):
        Simulator(Scheduler(FCFS(), CountingBlockSpace(64, 16)), lambda b: 1.0, requests, prefixes=ids)


def test_a_small_pool_evicts_cached_blocks_and_loses_hits(capsys):
    roomy = json.loads(sim(capsys, *LAB, "--json"))["metrics"]
    tight = json.loads(sim(capsys, *LAB[:-4], "--blocks", "10", "--block-size", "16", "--json"))["metrics"]
    assert roomy["evictions"] == 0 and tight["evictions"] > 0
    assert tight["prefix_hit_tokens"] < roomy["prefix_hit_tokens"]
    assert tight["prefix_lookup_tokens"] == roomy["prefix_lookup_tokens"]  # the same lookups, fewer found
    out = sim(capsys, *LAB[:-4], "--blocks", "10", "--block-size", "16")
    assert sum(int(n) for n in re.findall(r"evict (\d+) block", out)) == tight["evictions"]


def test_kv_cache_counts_evictions():
    kv = KVCache(4, 4, watermark=0.0)
    kv.allocate("a", 1, [1] * 8)
    kv.free("a")  # two cached blocks, two plain free ones
    kv.allocate("b", 1, 12)
    assert kv.evictions == 1 and kv.stats()["evictions"] == 1


def test_the_lab_run_prints_hits_questions_and_answers(capsys):
    out = sim(capsys, *LAB)
    assert "ARG shared_prefix 48\nARG prefixes 2\n" in out and "  system" in out
    assert "[arrive r0 r1 r2 r3 r4 r5 r6 r7]" in out and "hit r1 32 tokens" in out
    assert "7. the prefix cache" in out and out == sim(capsys, *LAB)
    answers = sim(capsys, *LAB, "-c")
    m = json.loads(sim(capsys, *LAB, "--json"))["metrics"]
    assert [r["cached"] for r in m["requests"]] == [0, 32, 0, 48, 48, 48, 48, 48]
    assert (m["prefix_hit_tokens"], m["prefix_lookup_tokens"]) == (272, 611)  # r1's first lookup fed nothing
    assert f"272 of 611 tokens looked up were cached, a hit rate of {272 / 611:.3f}" in answers


def test_no_shared_prefix_prints_as_before(capsys):
    base = ["sim", "--policy", "vtc", "-s", "4", "-n", "8", "--procs", "2", "--rate", "0"]
    for extra in ([], ["-c"]):
        out = sim(capsys, *base, *extra)
        assert out == sim(capsys, *base, *extra, "--shared-prefix", "0", "--prefixes", "3")
        assert "prefix" not in out and "system" not in out and "hit r" not in out
    m = json.loads(sim(capsys, *base, "--json"))
    assert "shared_prefix" not in m["args"] and "evictions" not in m["metrics"]
    assert "cached" not in m["metrics"]["requests"][0]
    assert main.main([*base, "--prefixes", "0", "--shared-prefix", "8"]) == 2
