"""An embedded kernel (`boot.start`) stops with its parent, taking its driver hosts and children along."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest

from llmos.syscalls import runtime

from conftest import until

PARENT = """
import json, sys, time
from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.userland import Client
kp = boot.start(KernelConfig(name=sys.argv[1], runtime_dir=sys.argv[2], drivers=["cpu"], log_level="warning"))
c = Client(kp.address, name="parent")
child = c.spawn("hold", ["1"])
hosts = [d.driver_os_pid for d in c.devices()]
print(json.dumps({"kernel": kp.popen.pid, "hosts": hosts, "child": child.os_pid}), flush=True)
time.sleep(600)
"""


def gone(os_pid: int) -> bool:
    """The OS process has ended (a zombie nobody reaped counts as ended)."""
    try:
        return psutil.Process(os_pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_embedded_kernel_stops_when_its_parent_dies(runtime_dir, sig):
    name = f"orphan-{sig.name.lower()}"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, name, runtime_dir], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        everyone = [pids["kernel"], pids["child"], *pids["hosts"]]
        assert pids["hosts"] and not any(gone(p) for p in everyone)
        parent.send_signal(sig)
        parent.wait()
        until(lambda: all(gone(p) for p in everyone), timeout=15)
        assert runtime.read_state(runtime.kernel_dir(name, runtime_dir)) is None  # it shut down cleanly
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.slow
def test_llmos_demo_stops_cleanly_on_sigterm(runtime_dir):
    """... with its web console (--web) up too: it prints the URL, which needs its token."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "llmos.userland.cli.main", "demo", "--steps", "100000", "--web", "--web-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = ""
        for line in demo.stdout:
            if match := re.search(r"web console: open (http://\S+)", line):
                url = match.group(1)
            if "$ llmos run train" in line:  # the kernel is up and the train program is being spawned
                break
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        local = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for 127.0.0.1
        with local.open(url, timeout=10) as page:
            assert page.status == 200 and b"llmos web" in page.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            local.open(url.split("?")[0], timeout=10)
        assert refused.value.code == 403
        state = runtime.read_state(runtime.kernel_dir(f"demo-{demo.pid}", runtime_dir))
        kernel = psutil.Process(state["os_pid"])
        until(lambda: any("llmos.userland.launch" in cmdline(p) for p in kernel.children()), timeout=30)
        family = [kernel.pid, *(p.pid for p in kernel.children())]
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=30)
        err = demo.stderr.read()
        assert demo.returncode == 130, err  # as after Ctrl-C: unwound, not killed by the signal
        assert "Traceback" not in err
        assert all(gone(p) for p in family)  # the kernel stopped its children before the demo returned
    finally:
        demo.kill()
        demo.wait()
