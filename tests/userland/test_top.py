"""`llmos top`, driven in a real terminal: tmux runs it, we read the screen and press q."""

import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
import torch
from llmos.userland import Client

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux); top is tested in it")


def tmux(*args: str) -> str:
    return subprocess.run([TMUX, *args], check=True, capture_output=True, text=True).stdout


def screen_until(session: str, predicate, timeout: float = 20.0) -> str:
    """Capture the pane until predicate(screen) holds; fail with the last screen."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if predicate(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"screen never matched; last screen:\n{screen}")


def _tokens_per_s(screen: str, name: str) -> float:
    """The TOK/S column (the last) of process `name`'s row; -1 while there is no rate yet."""
    row = next((line for line in screen.splitlines() if f" {name} " in f"{line} "), "")
    last = row.split()[-1] if row else "-"
    return float(last) if last.replace(".", "").isdigit() else -1.0


def _hit_rate(screen: str, pool: str) -> float:
    """The HIT RATE column (the last) of a KV pool's row, in percent; -1 when it has none yet."""
    row = next((line for line in screen.splitlines() if line.startswith(pool)), "")
    last = row.split()[-1] if row else "-"
    return float(last[:-1]) if last.endswith("%") else -1.0


def test_top_shows_devices_and_processes_and_quits_on_q(kernel, tmp_path):
    session = f"llmos-top-{os.getpid()}"
    status = tmp_path / "status"
    # the kernel's runtime dir travels in the environment (set by the runtime_dir fixture)
    env_args = [f"{k}={v}" for k, v in os.environ.items() if k.startswith("LLMOS_") or k == "PYTHONPATH"]
    command = f"{sys.executable} -m llmos.userland.cli.main top --kernel shared --delay 0.3; echo $? > {status}; sleep 60"
    with Client(kernel.address, name="visible") as c:
        c.put(torch.ones(1024))
        tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", "env", *env_args, "sh", "-c", command)
        try:
            screen = screen_until(session, lambda s: "visible" in s and "CALLS/S" in s)
            assert "llmos top - kernel shared" in screen and "syscalls" in screen
            assert "cpu0" in screen and "online" in screen
            device_row = next(line for line in screen.splitlines() if line.startswith("cpu0"))
            assert " / " in device_row and "fcfs" in device_row  # memory used / capacity, the policy
            process_row = next(line for line in screen.splitlines() if " visible " in f"{line} ")
            assert "running" in process_row and "4.0 KiB" in process_row
            # from the second screen on, rates: the device's utilisation, a generating process's tokens/s
            screen_until(session, lambda s: "%" in next(line for line in s.splitlines() if line.startswith("cpu0")))
            with Client(kernel.address, name="talker") as talker:
                model = talker.model_load("cpu", "tinygpt", config=dict(d_model=32, n_layers=1, n_heads=2, max_len=64))
                stop = threading.Event()

                def talk():
                    while not stop.is_set():  # 40 prompt tokens: 2 full blocks of 16 that later calls find cached
                        talker.generate(model.model, "top " * 10, max_tokens=20)

                thread = threading.Thread(target=talk)
                thread.start()
                try:
                    screen = screen_until(session, lambda s: _tokens_per_s(s, "talker") > 0)
                    screen = screen_until(session, lambda s: _hit_rate(s, "cpu0/model") > 0)
                finally:
                    stop.set()
                    thread.join()
            assert _tokens_per_s(screen, "visible") == 0  # it only holds memory
            assert _hit_rate(screen, "cpu0/model") < 80  # 32 of each call's 40 prompt tokens, the first call none
            tmux("send-keys", "-t", session, "q")
            deadline = time.monotonic() + 10
            while not status.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert status.exists(), "llmos top did not quit on q"
            assert status.read_text().strip() == "0"
        finally:
            subprocess.run([TMUX, "kill-session", "-t", session], check=False, capture_output=True)
