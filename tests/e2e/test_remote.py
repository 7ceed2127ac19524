"""Remote driver hosts: a node in its own network namespace joins the kernel over CurveZMQ TCP.

The node runs `llmos host` behind a veth pair (`llmos.benchmarks.netns.Link`,
run as root); where namespaces are not permitted the node connects over the
loopback instead, and the test that cuts the link skips, saying why.
"""

import asyncio
import json
import shutil
import socket
import time

import pytest
import torch

from llmos.benchmarks.netns import Link, start_node, stop_node
from llmos.kernel.security import keygen
from llmos.syscalls import Errno
from llmos.userland import AsyncClient, Client, LlmosError

from conftest import start_kernel, until

BEATS = 3  # the kernel's node_beats: a silent node is offline after 3 s (NODE_BEAT_S 1 s each)
BOUND_S = BEATS * 1.0 + 1.5  # ... noticed at the next watch tick, with margin for a loaded machine


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def link():
    link = Link.open()
    yield link
    link.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keys") / "keys")
    keygen(path)
    return path


@pytest.fixture(scope="module")
def remote(runtime_dir, link, keys, tmp_path_factory):
    """A kernel on the link's near side and node2 on its far side: (kernel, tcp address, log folder)."""
    logs = tmp_path_factory.mktemp("remote-logs")
    tcp = f"{link.kernel_ip}:{free_port(link.kernel_ip)}"
    kp = start_kernel(runtime_dir, "remote", tcp=tcp, keys_dir=keys, node_beats=BEATS, log_file=str(logs / "kernel.log"))
    node = start_node(link, f"tcp://{tcp}", keys, "node2", str(logs / "node2.log"))
    try:
        with Client(kp.address, name="watcher") as c:
            until(lambda: state(c, "node2/cpu0") == "online", timeout=60)
        yield kp, f"tcp://{tcp}", logs
    finally:
        stop_node(node)
        assert kp.stop() == 0


def state(c: Client, name: str) -> str:
    return next((d.state for d in c.devices() if d.name == name), "absent")


def events(logs, name: str) -> list[dict]:
    return [e for e in map(json.loads, (logs / "kernel.log").read_text().splitlines()) if e.get("event") == name]


def test_a_client_computes_on_the_remote_device_as_on_a_local_one(remote, link):
    kp, _, _ = remote
    with Client(kp.address, name="user") as c:
        info = next(d for d in c.devices() if d.name == "node2/cpu0")
        assert info.node == "node2" and not info.host_visible
        if link.namespaced:
            assert info.address == link.node_ip  # it came across the veth pair
        x = torch.randn(64, 48)
        results = {}
        for device in ("cpu0", "node2/cpu0"):
            a, b = c.put(x, device=device), c.put(x.T.contiguous(), device=device)
            results[device] = c.read(c.compute("matmul", a.handle, b.handle).handle)
        assert torch.equal(results["cpu0"], results["node2/cpu0"]) and torch.allclose(results["cpu0"], x @ x.T)
        config = dict(d_model=32, n_layers=1, n_heads=2, max_len=64)
        texts = [c.generate(c.model_load(d, "tinygpt", config=config, seed=3).model, "node", max_tokens=12).text
                 for d in ("cpu0", "node2/cpu0")]  # fmt: skip
        assert texts[0] == texts[1]
        for call in (lambda: c.model_load("node2/cpu0", "tinygpt", checkpoint="any.safetensors"),
                     lambda: c.model_save(c.model_load("node2/cpu0", "tinygpt", config=config).model, "x.safetensors")):
            with pytest.raises(LlmosError) as err:  # the node cannot see the kernel's files
                call()
            assert err.value.errno == Errno.EINVAL and "node2" in err.value.message
        until(lambda: next(d for d in c.devices() if d.name == "node2/cpu0").rtt_ms > 0)  # an idle ping came back


def test_a_data_parallel_step_across_the_link_is_a_step_on_the_whole_batch(remote, link):
    """A replica on cpu0 and one on node2/cpu0: gloo rendezvous across the link (the local host listens on the
    kernel's address as the node reached it), and the step equals one on the whole batch on one device."""
    kp, _, _ = remote
    config = dict(d_model=32, n_layers=1, n_heads=2, max_len=32)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 259, (4, 17), generator=gen).tolist() for _ in range(2)]
    text = list(range(40, 72))
    with Client(kp.address, name="dp") as c:
        load = dict(arch="tinygpt", config=config, kv_blocks=8, block_size=4, dtype="float64", seed=5)
        rep, solo = c.model_load(devices=["cpu0", "node2/cpu0"], **load), c.model_load("cpu0", **load)
        for batch in batches:
            got, want = c.train_step(rep.model, batch), c.train_step(solo.model, batch)
            assert (got.replicas, got.diverged, got.step) == (2, False, want.step)
            assert got.loss == pytest.approx(want.loss, rel=1e-12)
        assert c.logprobs(rep.model, text) == pytest.approx(c.logprobs(solo.model, text), abs=1e-10)
        for h in (rep.model, solo.model):
            c.model_free(h)


def test_a_host_without_a_host_key_is_refused_and_logged(remote, link, tmp_path):
    kp, tcp, logs = remote
    stranger = str(tmp_path / "stranger")  # its own keys, but the kernel's server key: it gets as far as the handshake
    keygen(stranger)
    shutil.copy(f"{kp.config.keys_dir}/server.key", f"{stranger}/server.key")
    client_as_host = str(tmp_path / "client-as-host")  # a key the kernel admits for syscalls, not for joining
    keygen(client_as_host)
    for name in ("server.key", "client.key_secret"):
        shutil.copy(f"{kp.config.keys_dir}/{name}", f"{client_as_host}/{name}")
    shutil.copy(f"{kp.config.keys_dir}/client.key_secret", f"{client_as_host}/host.key_secret")
    nodes = [start_node(link, tcp, path, name, str(tmp_path / f"{name}.log"))
             for path, name in ((stranger, "node3"), (client_as_host, "node4"))]  # fmt: skip
    try:
        until(lambda: events(logs, "tcp.refused") and any(e["node"] == "node4" for e in events(logs, "node.refused")), 30)
    finally:
        for node in nodes:
            stop_node(node)
    assert any("not a host key" in e["reason"] for e in events(logs, "node.refused"))
    with Client(kp.address, name="user") as c:
        assert not any(d.node in ("node3", "node4") for d in c.devices())


def test_plaintext_tcp_is_refused_without_insecure(remote, link, tmp_path):
    _, tcp, _ = remote
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "llmos.userland.cli.main", "host", "--kernel", tcp], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "refusing plain-text TCP" in out.stderr


def test_the_link_cut_mid_call_gives_eio_within_the_bound_and_the_node_rejoins(remote, link):
    if not link.namespaced:
        pytest.skip(f"the link cannot be cut without a network namespace: {link.why}")
    kp, _, _ = remote
    with Client(kp.address, name="user") as c:
        kept = c.put(torch.ones(4), device="node2/cpu0")
        local = c.put(torch.ones(4), device="cpu0")
        big = c.put(torch.randn(4000, 4000), device="node2/cpu0")  # its square takes the node a second or more

        async def cut_mid_call() -> tuple[float, LlmosError | None]:
            async with AsyncClient(kp.address, name="cutter") as a:
                mine = c.share(big.handle, a.pid)
                call = asyncio.ensure_future(a.compute("matmul", mine, mine))
                await asyncio.sleep(0.3)  # it is on the node's device now
                link.cut()
                cut_at = time.monotonic()
                try:
                    await call
                except LlmosError as exc:
                    return time.monotonic() - cut_at, exc
                return time.monotonic() - cut_at, None

        try:
            took, err = asyncio.run(cut_mid_call())
            assert err is not None and err.errno == Errno.EIO and took < BOUND_S, (took, err)
            assert state(c, "node2/cpu0") == "offline"
            with pytest.raises(LlmosError) as stale:
                c.read(kept.handle)  # a handle on it answers EIO until closed
            assert stale.value.errno == Errno.EIO
            assert torch.equal(c.read(local.handle), torch.ones(4))  # every other device goes on
        finally:
            link.restore()
        until(lambda: state(c, "node2/cpu0") == "online", timeout=60)  # its host gave up, came back, joined again
        again = c.put(torch.arange(3.0), device="node2/cpu0")
        assert torch.equal(c.read(again.handle), torch.arange(3.0))
        c.free(kept.handle)


def test_a_killed_node_takes_only_its_devices_offline_and_rejoins_under_the_same_name(remote, link, keys, tmp_path):
    import signal

    kp, tcp, _ = remote
    node = start_node(link, tcp, keys, "node5", str(tmp_path / "node5.log"))
    with Client(kp.address, name="user") as c:
        until(lambda: state(c, "node5/cpu0") == "online", timeout=60)
        stop_node(node, signal.SIGKILL)
        killed_at = time.monotonic()
        until(lambda: state(c, "node5/cpu0") == "offline", timeout=BOUND_S + 5)
        assert time.monotonic() - killed_at < BOUND_S
        assert state(c, "node2/cpu0") == "online" and state(c, "cpu0") == "online"
        with pytest.raises(LlmosError) as err:
            c.put(torch.ones(2), device="node5/cpu0")
        assert err.value.errno == Errno.ENODEV and "rejoins" in err.value.message
        node = start_node(link, tcp, keys, "node5", str(tmp_path / "node5.log"))
        try:
            until(lambda: state(c, "node5/cpu0") == "online", timeout=60)
            assert next(d for d in c.devices() if d.name == "node5/cpu0").restarts == 1
        finally:
            stop_node(node)
