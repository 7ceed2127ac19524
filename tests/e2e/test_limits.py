"""No client can make the kernel run out of open files: the limit is raised at boot, attaches are bounded."""

import os
import resource

import psutil
import pytest
import zmq

from llmos.syscalls import Errno
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.userland import Client, LlmosError
from llmos.userland.wire import decode_reply

from conftest import start_kernel

KERNEL_FILES = 160  # the open-file limit the flooded kernel is given: room for (160 - 64) // 3 = 32 processes


def attach(ctx: zmq.Context, address: str) -> tuple[zmq.Socket, LlmosError | None]:
    """Attach over a raw socket, as a client does; returns the socket and the error, if refused."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(address)
    sock.send(fr.encode_call(1, b"", m.Attach(name="flood", os_pid=os.getpid())))
    reply = fr.reply_decoder.decode(sock.recv())
    try:
        decode_reply(m.Attach, reply.kind, reply.body)
    except LlmosError as exc:
        return sock, exc
    return sock, None


def test_the_kernel_raises_its_open_file_limit_at_boot(runtime_dir):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))  # the kernel inherits a low soft limit
    try:
        kp = start_kernel(runtime_dir, "nofile")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert psutil.Process(kp.popen.pid).rlimit(psutil.RLIMIT_NOFILE) == (hard, hard)
    finally:
        assert kp.stop() == 0


def test_attaches_past_the_bound_per_user_are_refused(runtime_dir):
    kp = start_kernel(runtime_dir, "peruser", max_procs_per_user=3)
    try:
        clients = [Client(kp.address, name=f"c{i}") for i in range(3)]
        with pytest.raises(LlmosError) as err:
            Client(kp.address, name="one too many")
        assert err.value.errno == Errno.EAGAIN and "max_procs_per_user = 3" in err.value.message
        with Client(name="admin", kernel="peruser", admin=True) as admin:  # the owner is never locked out
            assert admin.null() is not None
        clients.pop().close()
        clients.append(Client(kp.address, name="again"))  # room again once one has exited
        for c in clients:
            c.close()
    finally:
        assert kp.stop() == 0


@pytest.mark.slow
def test_a_flood_of_attaches_cannot_exhaust_the_kernels_open_files(runtime_dir):
    """One process attaches in a loop (two connections each, as clients do) against a kernel with few open files:
    attaches past what its files allow are refused, and it keeps serving the others."""
    kp = start_kernel(runtime_dir, "flood")
    ctx = zmq.Context()
    socks = []
    try:
        with Client(kp.address, name="bystander", timeout_s=10) as bystander:
            psutil.Process(kp.popen.pid).rlimit(psutil.RLIMIT_NOFILE, (KERNEL_FILES, KERNEL_FILES))
            refused = []
            for _ in range(KERNEL_FILES):
                sock, error = attach(ctx, kp.address)
                if error is not None:
                    refused.append(error)
                    sock.close()  # as a client whose attach failed does
                    continue
                heartbeat = ctx.socket(zmq.DEALER)
                heartbeat.setsockopt(zmq.LINGER, 0)
                heartbeat.connect(kp.address)
                socks += [sock, heartbeat]
            assert refused and len(socks) // 2 < KERNEL_FILES // 3
            assert {e.errno for e in refused} == {Errno.EAGAIN} and "open-file limit (160)" in refused[0].message
            assert bystander.null() is not None
            ref = bystander.alloc("cpu", [1024])
            bystander.free(ref.handle)
    finally:
        ctx.destroy(linger=0)  # every socket, even one whose attach got no answer
        assert kp.stop() == 0
