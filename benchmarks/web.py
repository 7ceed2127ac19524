"""Console cost: the null-syscall round trip with `llmos web` attached and refreshing, against without.

One kernel (CPU driver), one raw pyzmq ROUTER echo (the `bench syscall`
baseline) and one `llmos web` process on that kernel, refreshing every
--interval seconds with one viewer reading its event stream. Each round
times the raw echo, then llmos `null` calls with the console stopped
(SIGSTOP: attached but silent, so "without") and with it running (SIGCONT),
in an order that alternates from round to round. Each timing spans several refreshes. Medians of per-round
ratios, so load from elsewhere moves neither side alone.
  rtt_ratio      = llmos RTT / raw RTT, console stopped    (the `bench syscall` figure)
  rtt_ratio_web  = llmos RTT / raw RTT, console refreshing
  web_cost       = rtt_ratio_web / rtt_ratio               (target <= 1.05)
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import zmq

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls import runtime
from llmos.userland.client import Client

from .syscall import _time_calls, _time_raw_rtt, echo_server, stop_echo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench web`."""
    parser.add_argument("--calls", type=int, default=20000, help="null round trips per side per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--interval", type=float, default=0.5, help="the console's refresh interval in s (default 0.5)")


class Viewer(threading.Thread):
    """A browser's stand-in: reads the console's event stream, counting the states pushed."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        base, token = url.split("?token=")
        self.request = urllib.request.Request(base + "api/events", headers={"X-Llmos-Token": token})
        self.states = 0

    def run(self) -> None:
        try:
            local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1
            with local.open(self.request, timeout=600) as stream:
                for line in stream:
                    self.states += line.startswith(b"event: state")
        except OSError:  # the console went away at the end
            pass


def _progress(text: str) -> None:
    print(f"\r[bench web] {text:60}", end="", file=sys.stderr, flush=True)


def start_console(kernel: str, runtime_dir: str, interval: float) -> tuple[subprocess.Popen, str]:
    """`llmos web` on the kernel, as users run it; returns the process and the URL it printed."""
    env = {**os.environ, "LLMOS_RUNTIME_DIR": runtime_dir}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmos.userland.cli.main", "web", "--kernel", kernel, "--port", "0", "--interval", str(interval)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    for line in proc.stdout:
        if match := re.search(r"open (http://\S+)", line):
            return proc, match.group(1)
    proc.wait()
    raise RuntimeError(f"llmos web exited ({proc.returncode}) without printing its URL")


def run(args: argparse.Namespace) -> dict:
    """Measure the three sides, round after round; return the figures."""
    import multiprocessing

    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    ctx = zmq.Context()
    address = f"ipc://{tmp}/raw.sock"
    server = multiprocessing.get_context("spawn").Process(target=echo_server, args=(address, False), daemon=True)
    server.start()
    raw = ctx.socket(zmq.DEALER)
    raw.connect(address)
    _progress("booting kernel...")
    kp = boot.start(KernelConfig(name="bench-web", runtime_dir=tmp, drivers=["cpu"], log_level="warning"))
    console = None
    try:
        _progress("starting llmos web...")
        console, url = start_console("bench-web", tmp, args.interval)
        viewer = Viewer(url)
        viewer.start()
        with Client(kp.address, name="bench-web") as c:
            small = fr.encode_call(1, c.token, m.Null())
            raw_rtt, bare_rtt, web_rtt = [], [], []
            for r in range(args.rounds):
                _progress(f"round {r + 1}/{args.rounds}")
                raw_rtt.append(_time_raw_rtt(raw, small, args.calls))
                for stopped in (True, False) if r % 2 == 0 else (False, True):  # which goes first alternates
                    os.kill(console.pid, signal.SIGSTOP if stopped else signal.SIGCONT)
                    if not stopped:
                        time.sleep(args.interval)  # its first refresh after the pause
                    (bare_rtt if stopped else web_rtt).append(_time_calls(c.null, args.calls))
            states = viewer.states
    finally:
        _progress("stopping...")
        if console is not None:
            os.kill(console.pid, signal.SIGCONT)
            console.terminate()
            console.wait(10)
        kp.stop()
        stop_echo(raw, server)
        ctx.term()
        runtime.remove(tmp)
        print(file=sys.stderr)
    ratio = statistics.median(b / a for a, b in zip(raw_rtt, bare_rtt))
    ratio_web = statistics.median(w / a for a, w in zip(raw_rtt, web_rtt))
    return {
        "raw_rtt_us": round(statistics.median(raw_rtt) * 1e6, 1),
        "llmos_rtt_us": round(statistics.median(bare_rtt) * 1e6, 1),
        "llmos_web_rtt_us": round(statistics.median(web_rtt) * 1e6, 1),
        "rtt_ratio": round(ratio, 3),
        "rtt_ratio_web": round(ratio_web, 3),
        "web_cost": round(statistics.median(w / b for b, w in zip(bare_rtt, web_rtt)), 3),
        "states_pushed": states,
        "interval_s": args.interval,
        "calls": args.calls * args.rounds,
        "rounds": args.rounds,
    }


def report(result: dict) -> str:
    """The figures as a table."""
    return "\n".join(
        [
            f"{result['calls']} null calls per side in {result['rounds']} rounds; the console refreshed every "
            f"{result['interval_s']} s and pushed {result['states_pushed']} states to its viewer",
            f"{'':26}{'RTT (us)':>10}{'ratio to raw':>14}",
            f"{'raw pyzmq echo':26}{result['raw_rtt_us']:>10}{'':>14}",
            f"{'llmos, console stopped':26}{result['llmos_rtt_us']:>10}{result['rtt_ratio']:>14}",
            f"{'llmos, console refreshing':26}{result['llmos_web_rtt_us']:>10}{result['rtt_ratio_web']:>14}",
            f"web_cost (refreshing / stopped) {result['web_cost']}   target <= 1.05",
        ]
    )
