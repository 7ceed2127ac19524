"""TCP needs CurveZMQ keys; with them only authorized clients get in."""

import socket

import pytest
import torch

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.kernel.security import keygen
from llmos.syscalls import Errno
from llmos.syscalls import runtime
from llmos.userland import Client, LlmosError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_without_keys_is_refused(runtime_dir):
    config = KernelConfig(name="tcp-refused", runtime_dir=runtime_dir, tcp=f"127.0.0.1:{free_port()}", drivers=[])
    with pytest.raises(RuntimeError, match="status 1"):
        boot.start(config, timeout=30)


def test_runtime_dir_open_to_others_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    with pytest.raises(runtime.RuntimeDirError, match="chmod 700"):
        runtime.ensure_private(str(open_dir))


def test_tcp_with_keys_admits_only_key_holders(runtime_dir, tmp_path):
    keys = str(tmp_path / "keys")
    keygen(keys)
    port = free_port()
    config = KernelConfig(name="tcp-curve", runtime_dir=runtime_dir, tcp=f"127.0.0.1:{port}", keys_dir=keys, drivers=["cpu"])
    with boot.start(config):
        with Client(f"tcp://127.0.0.1:{port}", keys_dir=keys, name="remote") as c:
            ref = c.put(torch.arange(4.0))
            assert torch.equal(c.read(ref.handle), torch.arange(4.0))
            child = c.spawn("echo", ["over", "tcp"])  # spawned children get the kernel's own keys
            assert c.wait(child.pid).status == 0
        with pytest.raises(LlmosError) as err:
            Client(f"tcp://127.0.0.1:{port}", name="stranger", timeout_s=1.5)
        assert err.value.errno == Errno.ETIMEDOUT


def test_tcp_insecure_is_an_explicit_choice(runtime_dir):
    port = free_port()
    config = KernelConfig(name="tcp-open", runtime_dir=runtime_dir, tcp=f"127.0.0.1:{port}", insecure=True, drivers=[])
    with boot.start(config):
        with Client(f"tcp://127.0.0.1:{port}", name="open") as c:
            assert c.getpid().pid == c.pid
