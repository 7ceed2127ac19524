"""Frees are posted: sent to the driver host without holding the device, so the next item follows at once."""

import os

import zmq

from llmos.kernel.config import KernelConfig
from llmos.kernel.devices import ONLINE, Device, Work
from llmos.kernel.kernel import Kernel
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto


def answer(k: Kernel, dev: Device, seq: int) -> None:
    """The driver host answers the message `seq` with DOk."""
    k.on_driver(dev, [zmq.Frame(dev.ident), zmq.Frame(proto.encoder.encode(proto.DOk(seq=seq)))])


def test_a_free_does_not_hold_the_device_and_its_answer_completes_nothing(runtime_dir):
    k = Kernel(KernelConfig(name="posted", runtime_dir=runtime_dir, drivers=[]))
    queue = k.pm.hook.llmos_device_queue(device="cpu0", policy=k.new_policy("fcfs"))
    dev = Device("cpu0", "cpu", 0, None, queue)
    dev.state = ONLINE
    sent, done = [], []
    k.send_driver = lambda dev, msg, bulk=(): sent.append(msg.seq)
    k.post(dev, proto.DFree(seq=1, tid=7))
    k.submit(dev, Work(owner=1, msg=proto.DPing(seq=2), done=lambda ok, frames: done.append(ok.seq)))
    k.submit(dev, Work(owner=1, msg=proto.DPing(seq=3), done=lambda ok, frames: done.append(ok.seq)))
    assert sent == [1, 2]  # the free went, and the next item right behind it; the third waits its turn
    answer(k, dev, 1)  # the free's answer: nobody waits for it
    assert done == [] and dev.inflight is not None and sent == [1, 2]
    answer(k, dev, 2)
    assert done == [2] and sent == [1, 2, 3]
    answer(k, dev, 3)
    assert done == [2, 3] and dev.inflight is None
    k.ctx.term()


def test_a_posted_allocation_is_answered_by_seq_and_failed_with_its_device(runtime_dir):
    k = Kernel(KernelConfig(name="posted2", runtime_dir=runtime_dir, drivers=[]))
    os.makedirs(os.path.join(runtime_dir, "posted2"))  # device_offline writes the kernel's state file
    queue = k.pm.hook.llmos_device_queue(device="cpu0", policy=k.new_policy("fcfs"))
    dev = Device("cpu0", "cpu", 0, None, queue)
    dev.state = ONLINE
    sent, done, failed = [], [], []
    k.send_driver = lambda dev, msg, bulk=(): sent.append(msg.seq)
    for seq in (1, 2):
        k.submit(dev, Work(owner=1, msg=proto.DPing(seq=seq), posted=True, done=lambda ok, frames: done.append(ok.seq),
                           fail=lambda errno, message: failed.append(errno)))  # fmt: skip
    k.submit(dev, Work(owner=1, msg=proto.DPing(seq=3), done=lambda ok, frames: done.append(ok.seq)))
    assert sent == [1, 2, 3] and dev.inflight.msg.seq == 3  # both posted items went, and the next right behind
    answer(k, dev, 2)  # answers come by seq, whatever holds the device
    assert done == [2] and dev.inflight.msg.seq == 3 and set(dev.posted) == {1}
    k.device_offline(dev, "test: the host died")
    assert failed == [Errno.EIO] and dev.posted == {}  # the unanswered posted allocation fails with its device
    k.ctx.term()
