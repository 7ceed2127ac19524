"""The kernel logs structlog JSON events with pid, syscall and device."""

import json

import torch

from llmos.userland import Client

from conftest import start_kernel


def test_events_are_json_lines_with_pid_syscall_and_device(runtime_dir, tmp_path):
    log = tmp_path / "kernel.log"
    kp = start_kernel(runtime_dir, "logs", log_level="debug", log_file=str(log))
    try:
        with Client(kp.address, name="logged") as c:
            c.put(torch.ones(2))
            pid = c.pid
    finally:
        assert kp.stop() == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert all({"event", "level", "timestamp"} <= set(e) for e in events)
    assert any(e["event"] == "device.online" and e["device"] == "cpu0" for e in events)
    assert {e["syscall"] for e in events if e["event"] == "syscall" and e["pid"] == pid} >= {"alloc", "write", "exit"}
    assert any(e["event"] == "process.exit" and e["pid"] == pid and e["reason"] == "exit(0)" for e in events)
    assert events[-1]["event"] == "kernel.stopped"
