"""The course's simulators: `llmos sim --static`, swap's cost, per-tick counters, and `llmos sim paging|prefix|admit|lifecycle`.

The subsystem simulators must give the memory service's own answers: their
printed answers are checked against a `KVCache` driven by hand, and each is
seeded (same seed, same text; another seed, another exercise).
"""

import json
import re

import pytest

from llmos.drivers import costmodel
from llmos.services.memory.kv import KVCache
from llmos.userland.cli import main
from llmos.userland.labsim import admit, frame, lifecycle, paging, prefix

LAB3 = ["--policy", "fcfs", "-s", "5", "-n", "6", "--rate", "0", "--blocks", "5", "--block-size", "8",
        "--max-seqs", "3", "--output-mean", "12"]
LAB4 = ["--policy", "fcfs", "-s", "6", "-n", "10", "--rate", "0", "--max-seqs", "4", "--token-budget", "64"]


def sim(capsys, *argv, code=0):
    assert main.main(["sim", *argv]) == code
    return capsys.readouterr()


def metrics(capsys, *argv):
    return json.loads(sim(capsys, *argv, "--json").out)["metrics"]


def test_static_batching_waits_for_the_whole_batch(capsys):
    continuous, static = metrics(capsys, *LAB4), metrics(capsys, *LAB4, "--static")
    assert continuous["output_tokens"] == static["output_tokens"]
    assert static["makespan_s"] > continuous["makespan_s"] * 1.1
    out = sim(capsys, *LAB4, "--static").out
    assert "ARG static True" in out
    assert "ARG static" not in sim(capsys, *LAB4).out  # the default run prints what it always printed


def test_swapping_costs_host_link_time_and_recompute_none(capsys):
    spec, model = costmodel.PRESETS["mocktpu"], costmodel.ModelShape()
    swap = metrics(capsys, *LAB3, "--preempt", "swap", "--swap-blocks", "16")
    recompute = metrics(capsys, *LAB3)
    assert swap["swapped_blocks"] > 0 and recompute["swapped_blocks"] == 0 and recompute["swap_s"] == 0
    per_block = costmodel.swap_time(spec, model, 8)
    assert swap["swap_s"] == pytest.approx(swap["swapped_blocks"] * per_block)
    assert per_block == 8 * model.kv_bytes_per_token / spec.host_bandwidth
    trace = sim(capsys, *LAB3, "--preempt", "swap", "--swap-blocks", "16").out
    first = re.search(r"tick +(\d+) +([\d.]+)- +([\d.]+) .*?(\d+) blocks? over the host link: \+([\d.]+) ms", trace)
    assert first and float(first.group(5)) == pytest.approx(int(first.group(4)) * per_block * 1e3, abs=1e-3)


def test_compute_prints_each_ticks_service_and_vtc_counters(capsys):
    out = sim(capsys, "--policy", "vtc", "-s", "4", "-n", "8", "--procs", "2", "--rate", "0", "-c").out
    rows = re.findall(r"^  tick +(\d+)  p1\+(\S+) +p2\+(\S+) +\| p1=(\S+) +p2=(\S+) +\| p1=(\S+) +p2=(\S+)", out, re.M)
    assert len(rows) == 15
    totals = [0.0, 0.0]
    for tick, s1, s2, t1, t2, c1, c2 in rows:
        totals = [totals[0] + float(s1), totals[1] + float(s2)]
        assert [float(t1), float(t2)] == totals  # running totals add up the per-tick service
        assert float(c1) >= float(t1) and float(c2) >= float(t2)  # a counter is service plus any lift
    assert totals == [117, 149]
    fcfs = sim(capsys, "--policy", "fcfs", "-s", "4", "-n", "8", "--procs", "2", "--rate", "0", "-c").out
    assert "Per tick: service in the tick | served so far\n" in fcfs  # no counters to show


@pytest.mark.parametrize("module", [paging, prefix, admit, lifecycle])
def test_seeded_questions_then_answers(module):
    one, again, other = module.simulate(0), module.simulate(0), module.simulate(1)
    assert frame.render(one, False) == frame.render(again, False) != frame.render(other, False)
    questions, answers = frame.render(one, False), frame.render(one, True)
    assert questions.startswith("ARG seed 0") and "Compute" in questions and "Answers" not in questions
    assert "Answers" in answers and "->" in answers and "->" not in questions


def test_paging_answers_are_the_memory_services(capsys):
    run = paging.simulate(0)
    kv = KVCache(12, 4, watermark=0)
    names = 1
    for step in run.steps:  # replay the printed operations on a KVCache of our own
        op, args = re.match(r"(\w+)\((.*)\)", step.op).groups()
        args = [a.strip().strip('"') for a in args.split(",")]
        if op == "allocate":
            kv.allocate(args[0], 1, int(args[1]))
        elif op == "fork":
            kv.fork(args[0], args[1])
            names += 1
        elif op == "append":
            assert step.result[0] == f"-> copies {kv.append(args[0], int(args[1]))}"
        else:
            kv.free(args[0])
    for line in run.answers:
        probe = re.match(r"token (\d+) of (s\d+): block (\d+)", line)
        if probe:
            t, seq, block = int(probe.group(1)), probe.group(2), int(probe.group(3))
            assert kv.block_table(seq)[t // 4] == block
    assert run.answers[-1] == f"ref counts {kv.snapshot()['ref']}; free {kv.num_free_blocks}"
    assert any("(s3): [(2, 3)]" in line for line in run.answers)  # seed 0 has copy-on-write to find


def test_prefix_hit_rate_adds_up():
    run = prefix.simulate(1)
    found = [int(m) for m in re.findall(r"found (\d+),", "\n".join(run.answers))]
    asked = [int(m) for m in re.findall(r"\(s\d, (\d+) tokens\)", "\n".join(run.answers))]
    assert run.answers[-1] == f"hit rate: {sum(found)} / {sum(asked)} = {sum(found) / sum(asked):.3f}"
    assert any("evicted [2]" in line for line in run.answers)  # seed 1 evicts (Lab 9)


def test_admit_gives_all_three_answers_and_admits_waiters():
    answers = "\n".join(admit.simulate(0).answers + admit.simulate(1).answers)
    assert "NEVER" in answers and "LATER -> OK after r3 freed" in answers and re.search(r"r\d: OK", answers)


def test_bad_arguments_are_refused_cleanly(capsys):
    err = sim(capsys, "paging", "--blocks", "1", code=2).err
    assert "llmos sim paging: need --blocks >= 4" in err
    assert "watermark" in sim(capsys, "admit", "--watermark", "1.5", code=2).err
    assert "--prompts >= 1" in sim(capsys, "prefix", "--prompts", "0", code=2).err
    assert "needs more than --blocks" in sim(capsys, "prefix", "--blocks", "2", code=2).err
    assert "llmos sim lifecycle: need --children >= 1" in sim(capsys, "lifecycle", "--children", "0", code=2).err


def test_lifecycle_ends_each_child_its_own_way_and_keeps_the_books():
    run = lifecycle.simulate(43)
    ops = [step.op for step in run.steps]
    assert {"p1 kills p2 (signal 15)", "p3 is stopped (SIGSTOP): no more calls, no heartbeats",
            "15 s pass: the kernel finds p3's lease expired", "p4 exits: exit(0)"} <= set(ops)
    assert ops.index("p3 is stopped (SIGSTOP): no more calls, no heartbeats") < ops.index(
        "15 s pass: the kernel finds p3's lease expired")
    text = "\n".join(run.answers)
    assert "alive still: t1 (held by p1; paid by p1), t3 (held by p1; paid by the kernel)" in text  # Lab 17
    assert "left the table (nobody can wait for them): p4" in text  # an orphan is nobody's to wait for
    assert "p1 waits for p3: status -9, lease expired: no call for 15 s" in text
    steps = {step.op: step.result[0] for step in lifecycle.simulate(13).steps}  # and the key's -s 13
    assert steps["p2 allocates a KV sequence of 10 tokens"].startswith("-> ENOMEM")
    assert steps["p2 allocates a KV sequence of 6 tokens"] == "-> ok: handle 2"
    assert "left the table (nobody can wait for them): p3" in steps["15 s pass: the kernel finds p3's lease expired"]
    assert lifecycle.simulate(13).answers[-2] == "zombies at the end: p4"
    for seed in range(20):  # every byte and block is accounted for: held by someone, or free
        other = lifecycle.simulate(seed)
        free = re.search(r"free: cpu0 (\d+) KiB of (\d+) KiB, KV (\d+) of (\d+) blocks", other.answers[-1])
        held = sum(int(k) for line in other.steps[-1].result for k in re.findall(r"pays (\d+) KiB", line))
        kernel = sum(int(k) for k in re.findall(r"t\d+ (\d+) KiB", next(
            (line for line in other.steps[-1].result if line.startswith("the kernel pays")), "")))
        assert held + kernel + int(free.group(1)) == int(free.group(2))
