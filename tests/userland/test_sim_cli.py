"""`llmos sim`: arguments first, a trace, questions or answers, JSON, workload files, user policies."""

import json

import pytest
from llmos.userland.cli import main


def sim(capsys, *argv):
    assert main.main(["sim", *argv]) == 0
    return capsys.readouterr().out


def test_prints_arguments_trace_and_questions(capsys):
    out = sim(capsys, "--policy", "vtc", "-s", "1")
    lines = out.splitlines()
    assert lines[0] == "ARG policy vtc" and lines[1] == "ARG seed 1"
    assert "tick   1" in out and "r0:prefill" in out
    assert "Compute, from the trace above" in out and "Answers" not in out


def test_compute_prints_the_answers(capsys):
    out = sim(capsys, "--policy", "vtc", "-s", "1", "-c")
    assert "Answers (simulated ms)" in out and "Compute, from" not in out
    for text in ("TTFT", "Throughput:", "Jain's fairness index", "Largest service gap"):
        assert text in out
    assert sum(1 for line in out.splitlines() if line.startswith("  r")) == 2 * 8  # workload table + answers


def test_json_metrics_match_a_rerun_and_differ_by_seed(capsys):
    one = json.loads(sim(capsys, "--policy", "rr", "-s", "3", "-n", "12", "--json"))
    again = json.loads(sim(capsys, "--policy", "rr", "-s", "3", "-n", "12", "--json"))
    other = json.loads(sim(capsys, "--policy", "rr", "-s", "4", "-n", "12", "--json"))
    assert one == again and one != other
    m = one["metrics"]
    assert one["args"]["policy"] == "rr" and len(m["requests"]) == 12
    assert {"throughput_tok_s", "service", "jain", "max_gap_tokens"} <= set(m)


def test_workload_file_device_and_preemption_options(capsys, tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"arrival": 0, "pid": 1, "prompt": 40, "output": 12},
        {"arrival": 0, "pid": 2, "prompt": 40, "output": 12, "priority": 2},
        {"arrival": 0.001, "pid": 2, "prompt": 30, "output": 0, "kind": "training"},
    ]))
    out = sim(capsys, "--workload", str(path), "--policy", "priority", "--device", "cpu", "--blocks", "8",
              "--block-size", "8", "--preempt", "swap", "-c", "-q")
    assert "ARG workload" in out and "ARG seed" not in out and "Trace" not in out
    assert "train" in out.split("Answers")[0]
    data = json.loads(sim(capsys, "--workload", str(path), "--blocks", "8", "--block-size", "8", "--json"))
    assert data["metrics"]["preemptions"] >= 1
    assert main.main(["sim", "--workload", str(path), "--blocks", "4", "--block-size", "8"]) == 2
    assert "needs more KV blocks" in capsys.readouterr().err


def test_trace_limit_and_user_policy_by_module_path(capsys):
    out = sim(capsys, "--policy", "llmos.services.scheduler.policies.mlfq:MLFQ", "-n", "20", "--trace-limit", "3")
    assert "more ticks (--trace-limit)" in out


def test_policy_from_a_plugin(capsys, monkeypatch):
    monkeypatch.setenv("LLMOS_PLUGINS", "llmos_testpolicy")  # tests/support, as a plugin package would register it
    out = sim(capsys, "--policy", "plugin-fcfs", "-c")
    assert out.splitlines()[0] == "ARG policy plugin-fcfs" and "Answers" in out


@pytest.mark.parametrize("policy, message", [
    ("nope", "no policy 'nope'; choose from fcfs, mlfq"),
    ("no_such_module:Policy", "cannot load policy 'no_such_module:Policy': No module named 'no_such_module'"),
    ("llmos.services.scheduler.policies:Nope", "cannot load policy 'llmos.services.scheduler.policies:Nope'"),
    ("llmos.services.scheduler.policies:BUILTIN", "'llmos.services.scheduler.policies:BUILTIN' is not a class"),
])
def test_unknown_policy_is_a_one_line_error(capsys, policy, message):
    assert main.main(["sim", "--policy", policy]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"llmos sim: {message}") and captured.err.count("\n") == 1
