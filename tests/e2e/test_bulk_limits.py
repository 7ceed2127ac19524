"""Bulk frames: the kernel's memory for them is bounded, and large tensors travel in pieces."""

import socket
import struct

import psutil
import pytest
import torch

from llmos.kernel.config import KernelConfig
from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import start_kernel

MiB = 1 << 20


def zmtp_dealer(ipc_path: str) -> socket.socket:
    """A bare ZMTP 3.0 DEALER peer (NULL security) on the kernel's ipc socket, after the handshake."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(ipc_path)
    s.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31)
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    s.sendall(b"\x04" + bytes([len(body)]) + body)
    got = b""
    while len(got) < 64:  # the kernel's greeting
        got += s.recv(64 - len(got))
    return s


@pytest.mark.slow
def test_a_huge_frame_sent_slowly_does_not_grow_the_kernel(runtime_dir):
    """A frame declared as 3 GiB, of which 192 MiB arrive: the kernel drops it at its header (old: buffered it all)."""
    assert KernelConfig().max_bulk_bytes <= 1 << 30  # the default bound per frame
    kp = start_kernel(runtime_dir, "bulk")
    try:
        with Client(kp.address) as c:
            kernel = psutil.Process(c.stat().os_pid)
            before = kernel.memory_info().rss
            peer = zmtp_dealer(kp.address.removeprefix("ipc://"))
            sent = 0
            try:
                peer.sendall(b"\x02" + struct.pack(">Q", 3 << 30))  # one long frame of 3 GiB
                chunk = b"\0" * MiB
                while sent < 192 * MiB:
                    peer.sendall(chunk)
                    sent += len(chunk)
            except OSError:  # the kernel closed the connection: the frame is refused
                pass
            c.null()  # the kernel read what it was sent (or dropped it) and serves others
            grown = kernel.memory_info().rss - before
            peer.close()
            assert grown < 32 * MiB, f"the kernel grew by {grown / MiB:.0f} MiB after {sent / MiB:.0f} MiB sent"
            assert c.null() is not None
    finally:
        assert kp.stop() == 0


@pytest.fixture(scope="module")
def small(runtime_dir):
    """A kernel whose bulk limit is 1 MiB, with a host-visible device (cpu) and one behind its driver (mocktpu)."""
    kp = start_kernel(runtime_dir, "pieces", drivers=["cpu", "mocktpu"], max_bulk_bytes=MiB)
    yield kp
    assert kp.stop() == 0


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "mocktpu"])
def test_tensors_over_the_bulk_limit_are_written_and_read_in_pieces(small, device):
    with Client(small.address) as c:
        assert c.max_bulk_bytes == MiB
        x = torch.randn(917, 1000)  # 3.5 MiB: four pieces
        writes = c.stat().by_syscall.get("write", 0)
        ref = c.put(x, device)
        assert c.stat().by_syscall["write"] == writes + 4
        torch.testing.assert_close(c.read(ref.handle), x, rtol=0, atol=0)
        small_one = c.put(torch.arange(10.0), device)  # under the limit: one call each way, as before
        torch.testing.assert_close(c.read(small_one.handle), torch.arange(10.0))


@pytest.mark.slow
def test_whole_reads_and_writes_past_the_limit_and_bad_pieces_are_typed_errors(small):
    from llmos.syscalls import messages as m
    from llmos.userland.api import one_call

    with Client(small.address) as c:
        ref = c.alloc("mocktpu", [2 * MiB // 4], "float32")

        def error(call, bulk=()):
            with pytest.raises(LlmosError) as err:
                c._run(one_call(call, bulk))
            return err.value.errno, err.value.message

        errno, message = error(m.Read(handle=ref.handle))
        assert errno == Errno.E2BIG and "in pieces" in message
        assert error(m.Read(handle=ref.handle, offset=0, length=MiB + 1))[0] == Errno.E2BIG
        assert error(m.Read(handle=ref.handle, offset=2 * MiB + 1))[0] == Errno.EINVAL
        assert error(m.Write(handle=ref.handle, offset=-1), (b"x",))[0] == Errno.EINVAL
        assert error(m.Write(handle=ref.handle, offset=2 * MiB - 1), (b"xy",))[0] == Errno.EINVAL
        assert error(m.Write(handle=ref.handle), (b"\0" * (MiB + 1),))[0] == Errno.E2BIG
        c._run(one_call(m.Write(handle=ref.handle, offset=2 * MiB - 4), (b"\0\0\x80\x3f",)))  # 1.0 at the end
        assert c.read(ref.handle)[-1].item() == 1.0
