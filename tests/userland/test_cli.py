"""The `llmos` command, run as a user runs it."""

import json
import subprocess
import sys

import pytest

LLMOS = [sys.executable, "-m", "llmos.userland.cli.main"]


def llmos(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*LLMOS, *args], capture_output=True, text=True, check=check, timeout=timeout)


def test_help_lists_every_command():
    out = llmos("--help").stdout
    for command in ("boot", "run", "ps", "kill", "devices", "driver", "keygen", "mem", "sched", "sim", "bench", "demo"):
        assert command in out
    assert "syscall" in llmos("bench", "--help").stdout


def test_devices_ps_run_kill_against_a_kernel(kernel):
    assert "cpu0" in llmos("devices", "--kernel", "shared").stdout
    assert "llmos-ps" in llmos("ps", "--kernel", "shared").stdout  # the command sees itself
    run = llmos("run", "--kernel", "shared", "matmul", "-n", "32")
    assert "OK" in run.stdout and run.returncode == 0
    assert llmos("run", "--kernel", "shared", "echo", "7", "x", check=False).returncode == 7
    pid = int(llmos("run", "--kernel", "shared", "--detach", "hold", "1").stdout)
    assert llmos("kill", "--kernel", "shared", str(pid)).returncode == 0
    unknown = llmos("run", "--kernel", "shared", "nope", check=False)
    assert unknown.returncode == 2 and "no program 'nope'" in unknown.stderr


def test_mem_prints_devices_processes_and_kv_pools(kernel, client):
    pool = client.kv_pool("cpu", layers=1, kv_heads=1, head_dim=4, blocks=8)
    seq = client.kv_alloc("cpu", pool.pool, 20)
    out = llmos("mem", "--kernel", "shared").stdout
    assert "cpu0:" in out and f"KV pool {pool.pool}" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:2] == [str(client.pid), "test"]]
    assert len(rows) == 2 and rows[1][2] == "2"  # it holds the pool's bytes (its creator pays) and 2 of its blocks
    client.kv_free(seq.seq)


def test_mem_shows_a_models_bytes_before_and_after_it_is_quantized(kernel, client):
    info = client.model_load("cpu", "tinygpt", config={"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 32},
                             kv_blocks=2, block_size=8)  # fmt: skip

    def row() -> str:
        [line] = [line for line in llmos("mem", "--kernel", "shared").stdout.splitlines() if f"pid {client.pid}:" in line]
        return line

    before = row()
    done = client.model_quantize(info.model, "int8")
    after = row()
    assert "(tinygpt)" in before and "(tinygpt, int8)" in after
    assert f"weights {done.bytes_before / 1024:.1f} KiB" in before and f"weights {done.bytes_after / 1024:.1f} KiB" in after
    client.model_free(info.model)


def test_bench_compress_json_has_the_ratios_of_every_scheme(tmp_path):
    import torch

    from llmos.drivers.models import TinyGPT, TinyGPTConfig
    from llmos.drivers.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = str(tmp_path / "small.safetensors")
    save_checkpoint(path, TinyGPT(TinyGPTConfig(d_model=32, n_layers=1, n_heads=2, max_len=32)))
    out = llmos("bench", "compress", "--json", "--checkpoint", path, "--schemes", "int8,prune2:4", "--eval-windows", "2")
    result = json.loads(out.stdout)
    assert set(result["schemes"]) == {"int8", "prune2:4"} and result["window"] == 32 and result["eval_windows"] == 2
    for s in result["schemes"].values():
        assert 0 < s["bytes_ratio"] < 1 and s["ppl_ratio"] > 0 and s["tok_s_ratio"] > 0
    assert result["schemes"]["prune2:4"]["sparsity"] == 0.5 and set(result["targets_met"]) == {"int8"}
    assert "2/2 prune2:4" in out.stderr  # progress, on stderr
    bad = llmos("bench", "compress", "--schemes", "int3", check=False)
    assert bad.returncode != 0 and "int3" in bad.stderr


def test_sched_shows_and_switches_policies(kernel):
    assert "fcfs" in llmos("sched", "--kernel", "shared").stdout
    try:
        assert "vtc" in llmos("sched", "--kernel", "shared", "cpu0", "--set", "vtc").stdout
        assert llmos("sched", "--kernel", "shared", "cpu0", "--set", "nope", check=False).returncode == 1
    finally:
        llmos("sched", "--kernel", "shared", "cpu0", "--set", "fcfs")


def test_commands_without_a_kernel_say_how_to_start_one(tmp_path):
    out = llmos("ps", "--kernel", "nobody-here", check=False)
    assert out.returncode != 0 and "llmos boot" in out.stderr


def test_run_list_shows_the_kernels_programs_not_this_environments(kernel, monkeypatch):
    monkeypatch.setenv("LLMOS_PLUGINS", "")  # this command's environment lacks the test plugin; the kernel has it
    out = llmos("run", "--kernel", "shared", "--list").stdout
    assert "matmul" in out and "hold " in out and "chat         talk with a model line by line (interactive)" in out


def test_keygen_writes_keys(tmp_path):
    llmos("keygen", str(tmp_path / "keys"))
    assert {p.name for p in (tmp_path / "keys").iterdir()} >= {"server.key", "server.key_secret", "client.key", "authorized"}


@pytest.mark.slow
@pytest.mark.slow
def test_demo_trains_then_four_processes_share_the_device_and_it_exits_cleanly(tmp_path):
    from llmos.userland.trace import from_log

    # 60 tokens: more than one work item of decode steps (MULTI_STEP, 32) each, so that a process whose
    # siblings start late still shares steps with them
    out = llmos("demo", "--steps", "4", "--tokens", "60", "--trace", str(tmp_path), timeout=240).stdout
    assert "$ llmos run train" in out and "trained: loss" in out and "held-out perplexity" in out
    rows = [line for line in out.splitlines() if "steps shared with the others" in line]
    assert len(rows) == 4 and all("(60 tokens" in row for row in rows)
    assert all(int(row.split("tokens/s, ")[1].split()[0]) > 0 for row in rows)  # every process shared steps
    assert "kernel stopped (status 0)" in out
    assert (tmp_path / "trace.json").stat().st_size > 0 and (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "plot-generate.png").read_bytes()[:4] == b"\x89PNG"
    tl = from_log(tmp_path / "kernel.log")
    generators = {pid for pid, name in tl.processes.items() if name == "generate"}
    starts: dict[float, set] = {}
    for s in tl.work:
        if s.name == "model_step":
            starts.setdefault(s.start, set()).add(s.pid)
    assert len(generators) == 4 and any(pids == generators for pids in starts.values())  # one step, four processes


@pytest.mark.slow
def test_bench_generate_json_has_the_promised_keys_and_both_sides_agree():
    small = ["--d-model", "32", "--layers", "1", "--heads", "2", "--prompt", "8", "--new", "16", "--procs", "3",
             "--repeats", "2", "--pairs", "1", "--batch", "2", "--window", "16", "--steps", "2", "--peak-bw", "100"]  # fmt: skip
    result = json.loads(llmos("bench", "generate", "--json", *small, timeout=240).stdout)
    assert {"single_stream_ratio", "batching_speedup", "train_step_ratio", "raw_single_tok_s", "concurrent_tok_s",
            "single_stream_ratio_median", "batching_speedup_median"} <= set(result)  # fmt: skip
    assert result["outputs_match"] is True  # llmos and plain torch wrote the same greedy text
    assert (result["device"], result["raw_device"]) == ("cpu", "cpu")  # both sides on one device, and said so
    assert (result["dtype"], result["graphs"]) == ("float32", False)
    per_token = result["weight_bytes"] / 100e9  # seconds a token's weights take at 100 GB/s
    assert result["llmos_roofline_frac"] == pytest.approx(per_token * result["llmos_single_tok_s"], rel=1e-2)
    assert result["batched_outputs_match"] is True  # and batching changed no text
    assert min(result["single_stream_ratio"], result["batching_speedup"], result["train_step_ratio"]) > 0
    assert min(result["single_stream_ratio_median"], result["batching_speedup_median"]) > 0


@pytest.mark.slow
def test_bench_hf_json_has_the_promised_keys_and_matches_transformers():
    small = ["--d-model", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--vocab", "300", "--prompt", "8",
             "--new", "12", "--procs", "3", "--repeats", "1", "--pairs", "1"]  # fmt: skip
    result = json.loads(llmos("bench", "hf", "--json", *small, timeout=240).stdout)
    assert {"hf_single_stream_ratio", "hf_batching_speedup", "hf_single_tok_s", "llmos_single_tok_s",
            "hf_single_stream_ratio_median", "hf_batching_speedup_median"} <= set(result)  # fmt: skip
    assert result["outputs_match"] is True  # llmos and transformers wrote the same greedy text
    assert (result["device"], result["raw_device"]) == ("cpu", "cpu")
    assert result["batched_outputs_match"] is True
    assert min(result["hf_single_stream_ratio"], result["hf_batching_speedup"]) > 0


def test_bench_prefix_json_reports_hits_and_the_same_texts_both_ways():
    small = ["--d-model", "32", "--layers", "1", "--heads", "2", "--procs", "3", "--system", "40", "--question", "4",
             "--new", "6", "--rounds", "1"]  # fmt: skip
    result = json.loads(llmos("bench", "prefix", "--json", *small, timeout=240).stdout)
    assert {"prefix_ttft_speedup", "prefix_throughput_speedup", "ttft_ms_cache", "tok_s_no_cache"} <= set(result)
    assert result["prefix_outputs_match"] is True  # the cache changed no text
    assert result["prefix_hit_rate"] == round(32 / 44, 3)  # the system prompt's two full blocks, in each prompt
    assert min(result["prefix_ttft_speedup"], result["prefix_throughput_speedup"]) > 0


def test_bench_raw_side_runs_on_the_torch_device_of_the_llmos_device():
    from llmos.benchmarks.generate import raw_device

    assert [raw_device(d) for d in ("cuda0", "cuda3", "cuda", "cpu", "cpu1", "mocktpu0")] == [
        "cuda:0", "cuda:3", "cuda:0", "cpu", "cpu", "cpu"]  # fmt: skip


def test_bench_generate_refuses_zero_rounds_before_booting_anything():
    out = llmos("bench", "generate", "--pairs", "0", check=False)
    assert out.returncode != 0 and "--pairs" in out.stderr


@pytest.mark.slow
def test_bench_syscall_json_has_the_promised_keys():
    out = llmos("bench", "syscall", "--json", "--calls", "200", "--mib", "4", "--rounds", "2", "--audit", "compare")
    result = json.loads(out.stdout)
    assert {"raw_rtt_us", "llmos_rtt_us", "rtt_ratio", "lean_rtt_us", "rtt_ratio_lean", "raw_gib_s", "llmos_gib_s",
            "bw_ratio", "off_rtt_us", "audit_rtt_ratio", "rtt_ratio_audit_off", "denied_ratio"} <= set(result)  # fmt: skip
    assert result["rtt_ratio"] > 0 and result["bw_ratio"] > 0 and result["audit_rtt_ratio"] > 0
    assert result["denied_on_us"] > 0 and result["denied_off_us"] > 0


def test_bench_load_json_has_the_promised_keys():
    out = llmos("bench", "load", "--json", "--clients", "2", "--procs", "2", "--depth", "2", "--seconds", "0.3",
                "--rounds", "1", "--warmup", "0.1")  # fmt: skip
    result = json.loads(out.stdout)
    assert {"raw_calls_s", "llmos_calls_s", "load_ratio", "raw_p50_ms", "raw_p99_ms", "llmos_p50_ms", "llmos_p99_ms",
            "errors", "kernel_rss_before_mb", "kernel_rss_after_mb", "kernel_rss_growth_mb"} <= set(result)  # fmt: skip
    assert result["raw_calls_s"] > 0 and result["llmos_calls_s"] > 0 and result["load_ratio"] > 0
    assert result["errors"] == 0 and result["mix"] == "null/alloc/write/read/free"
    assert 0 < result["llmos_p50_ms"] <= result["llmos_p99_ms"]


def test_boot_passes_driver_options_to_its_drivers(runtime_dir):
    import signal

    from conftest import until

    boot = subprocess.Popen([*LLMOS, "boot", "--name", "cliopts", "--drivers", "cpu", "--log-level", "error",
                             "--driver-option", "cpu.count=2", "--driver-option", "cpu.threads=1"])  # fmt: skip
    try:
        until(lambda: "share 2 of 2" in llmos("devices", "--kernel", "cliopts", check=False).stdout, timeout=60)
    finally:
        boot.send_signal(signal.SIGTERM)
        assert boot.wait(timeout=30) == 0
    for bad in ("cpu.count=0", "cpu.count=two", "count=2", "cpu.=1"):
        out = llmos("boot", "--driver-option", bad, check=False)
        assert out.returncode == 2 and "--driver-option" in out.stderr, bad


def test_bench_dp_json_has_the_promised_keys_and_both_runs_agree():
    small = ["--d-model", "32", "--layers", "1", "--heads", "2", "--batch", "4", "--window", "16", "--steps", "2",
             "--check-steps", "2"]  # fmt: skip
    result = json.loads(llmos("bench", "dp", "--json", *small, timeout=240).stdout)
    assert {"dp_step_speedup", "dp_weights_match", "step_ms_1_replica", "step_ms_2_replicas",
            "weights_max_diff_float64", "weights_max_diff_float32"} <= set(result)  # fmt: skip
    assert result["dp_weights_match"] is True and result["weights_max_diff_float64"] < 1e-9
    assert result["dp_step_speedup"] > 0 and len(result["step_ms_2_replicas_all"]) == 2
    assert result["loss_1_replica"] == pytest.approx(result["loss_2_replicas"], rel=1e-4)
