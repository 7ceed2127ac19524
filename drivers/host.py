"""The driver host: one process per device, between the kernel and a driver.

MINIX-style: a driver crash takes out this process, never the kernel, and the
kernel starts a new one. Run as `python -m llmos.drivers.host` by the kernel
with its orders in the environment (LLMOS_DRIVER_*). It says Hello, then
serves one message at a time, answering each with Ok or Fail. It exits when
the kernel goes away (its parent changes or nothing arrives for a while).

On another machine `llmos host` runs it with LLMOS_NODE set: it then says
Hello with its node's name, driver kind and index instead of a secret (its
CurveZMQ host key is its proof), beats every NODE_BEAT_S from a second
socket while it serves, and exits with status `GONE_STATUS` when the kernel
has been silent for NODE_SILENCE_S, so that `llmos host` starts a new one
(which joins again) after a backoff.
"""

import ctypes
import importlib
import json
import os
import sys
import threading
import time

import msgspec
import zmq

from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls.frames import recv_frames, send_frames

from .base import Driver, DriverError

KERNEL_SILENCE_S = 15.0  # the kernel pings every second; this much silence means it is gone
NODE_SILENCE_S = 5.0  # a remote host gives up on a silent kernel sooner: its node's host restarts it
GONE_STATUS = 75  # a remote host's exit status when the kernel went silent (EX_TEMPFAIL: try again later)
MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations below it come from the heap, not a fresh mmap
TRIM_THRESHOLD = 256 << 20  # free memory the heap keeps before giving any back to the system


def keep_freed_memory() -> bool:
    """Have glibc keep freed memory for reuse instead of handing it back to the system; False off glibc.

    A model step allocates and frees the same large temporaries every time
    (a batch of 8 sequences at 150 positions gathers about a megabyte of
    keys and values per layer). With glibc's adaptive defaults those come
    from fresh mmaps or from a heap top trimmed after every free, so each step
    page-faults them in again: about 600 minor faults per step, and such a
    step took about twice as long as with these fixed thresholds. A device
    driver keeping its freed memory for the next step is what GPU allocators
    do too.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt's parameter numbers (malloc.h)
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))


def load_driver(target: str, index: int, options: dict) -> Driver:
    """Import "module:Class" and make the driver for device `index`."""
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(index, options)


class Host:
    """Serves one driver over a DEALER socket connected to the kernel."""

    def __init__(self, driver: Driver, sock: zmq.Socket):
        self.driver = driver
        self.sock = sock

    def handle(self, msg: proto.ToDriver, frames: list) -> list:
        """Serve one message; return the reply frames."""
        try:
            match msg:
                case proto.DPing():
                    return [proto.encoder.encode(proto.DOk(seq=msg.seq))]
                case proto.DAlloc():
                    self.driver.alloc(msg.tensor)
                case proto.DFree():
                    self.driver.free(msg.tid)
                case proto.DWrite() if msg.offset is None:
                    self.driver.write(msg.tid, frames[1].buffer)
                case proto.DWrite():
                    self.driver.write_at(msg.tid, msg.offset, frames[1].buffer)
                case proto.DCopyBlocks():
                    self.driver.copy_blocks(msg.tensor, msg.block_bytes, msg.pairs)
                case proto.DForget():
                    self.driver.forget(msg.path)
                case proto.DRead():
                    data = self.driver.read(msg.tid) if msg.offset is None else self.driver.read_at(msg.tid, msg.offset, msg.length)
                    return [proto.encoder.encode(proto.DOk(seq=msg.seq)), data]
                case proto.DModelLoad():
                    desc = self.driver.model_load(
                        msg.model, msg.target, msg.config, msg.dtype, msg.checkpoint, msg.kv_blocks, msg.block_size,
                        msg.seed, msg.folder, msg.swap_blocks, **({"key": msg.key} if msg.key else {}),
                    )
                    return [proto.encoder.encode(proto.DOk(seq=msg.seq)), proto.encoder.encode(desc)]
                case proto.DModelFree():
                    self.driver.model_free(msg.model)
                case proto.DModelStep():
                    start = time.perf_counter()
                    tokens = self.driver.model_step(msg.model, msg.seqs, msg.steps, msg.moves)
                    ok = proto.DOk(seq=msg.seq, wall_s=time.perf_counter() - start)
                    return [proto.encoder.encode(ok), proto.encoder.encode(tokens)]
                case proto.DLogProbs():
                    values = self.driver.model_logprobs(msg.model, msg.tokens)
                    return [proto.encoder.encode(proto.DOk(seq=msg.seq)), proto.encoder.encode(values)]
                case proto.DModelSave():
                    digest = self.driver.model_save(msg.model, msg.path, msg.format, msg.source,
                                                    **({"key": msg.key} if msg.key else {}))  # fmt: skip
                    if isinstance(digest, str):
                        return [proto.encoder.encode(proto.DOk(seq=msg.seq)), proto.encoder.encode(digest)]
                case proto.DTrainStep():
                    start = time.perf_counter()
                    out = self.driver.model_train_step(
                        msg.model, msg.tokens, msg.lr, msg.weight_decay, msg.clip, msg.total, msg.grouped
                    )
                    ok = proto.DOk(seq=msg.seq, wall_s=time.perf_counter() - start)
                    return [proto.encoder.encode(ok), proto.encoder.encode(out)]
                case proto.DGroupOpen():
                    port = self.driver.group_open(msg.model, msg.host, msg.timeout_s)
                    return [proto.encoder.encode(proto.DOk(seq=msg.seq)), proto.encoder.encode(proto.GroupStore(port=port))]
                case proto.DGroupJoin():
                    self.driver.group_join(msg.model, msg.rank, msg.world, msg.store, msg.host, msg.prefix, msg.timeout_s,
                                           msg.backend)  # fmt: skip
                case proto.DModelQuantize() | proto.DModelPrune():
                    start = time.perf_counter()
                    if isinstance(msg, proto.DModelQuantize):
                        out = self.driver.model_quantize(msg.model, msg.scheme, msg.group_size, msg.windows)
                    else:
                        out = self.driver.model_prune(msg.model, msg.sparsity, msg.pattern, msg.windows)
                    ok = proto.DOk(seq=msg.seq, wall_s=time.perf_counter() - start)
                    return [proto.encoder.encode(ok), proto.encoder.encode(out)]
                case proto.DOp():
                    if msg.new_out:
                        self.driver.alloc(msg.out)
                    start = time.perf_counter()
                    try:
                        sim = self.driver.run_op(msg.op, msg.inputs, msg.out, msg.params)
                    except Exception:
                        if msg.new_out:
                            self.driver.free(msg.out.tid)
                        raise
                    wall = time.perf_counter() - start
                    return [proto.encoder.encode(proto.DOk(seq=msg.seq, wall_s=wall, sim_s=sim))]
        except DriverError as exc:
            return [proto.encoder.encode(proto.DFail(seq=msg.seq, errno=int(exc.errno), message=exc.message))]
        except Exception as exc:  # a driver bug: report it, keep serving
            fail = proto.DFail(seq=msg.seq, errno=int(Errno.EIO), message=f"driver error: {exc!r}")
            return [proto.encoder.encode(fail)]
        return [proto.encoder.encode(proto.DOk(seq=msg.seq))]

    def serve(self, silence_s: float = KERNEL_SILENCE_S) -> bool:
        """Answer messages until the kernel goes away: True when it fell silent for `silence_s`, False when
        this host's parent changed."""
        parent = os.getppid()
        last = time.monotonic()
        self.sock.setsockopt(zmq.RCVTIMEO, 1000)  # a blocking receive, not a Poller built per message
        while True:
            try:
                frames = recv_frames(self.sock)
            except zmq.Again:
                if os.getppid() != parent:
                    return False
                if time.monotonic() - last > silence_s:
                    return True
                continue
            last = time.monotonic()
            try:
                msg = proto.to_driver_decoder.decode(frames[0].buffer)
            except msgspec.DecodeError:
                continue  # only the kernel talks to us; a bad frame is its bug, nothing to answer
            send_frames(self.sock, self.handle(msg, frames), copy=False)
            last = time.monotonic()  # silence counts from the last exchange, not from the start of a long op


def connect(ctx: zmq.Context, ident: bytes, env) -> zmq.Socket:
    """A DEALER socket with routing identity `ident`, connected to the kernel (with CurveZMQ keys if given)."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, ident)
    sock.setsockopt(zmq.LINGER, 0)
    curve = env.get("LLMOS_CURVE")
    if curve:
        server_public, public, secret = json.loads(curve)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
            server_public.encode(),
            public.encode(),
            secret.encode(),
        )
    sock.connect(env["LLMOS_KERNEL"])
    return sock


def kernel_host(env) -> str:
    """The host part of the kernel's TCP address (LLMOS_KERNEL `tcp://HOST:PORT`): the kernel's machine as this node sees it."""
    return env["LLMOS_KERNEL"].split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")


def beat(ctx: zmq.Context, ident: bytes, env, stop: threading.Event) -> None:
    """A remote host's heartbeat: a DBeat every NODE_BEAT_S from a socket of its own until `stop`."""
    sock = connect(ctx, ident + b".beat", env)
    message = proto.encoder.encode(proto.DBeat())
    try:
        while not stop.is_set():
            sock.send(message)
            stop.wait(proto.NODE_BEAT_S)
    finally:
        sock.close()


def main() -> int:
    """Entry point: read orders from the environment, connect, say Hello, serve."""
    keep_freed_memory()
    env = os.environ
    options = json.loads(env.get("LLMOS_DRIVER_OPTIONS", "{}"))
    driver = load_driver(env["LLMOS_DRIVER_TARGET"], int(env["LLMOS_DRIVER_INDEX"]), options)
    node = env.get("LLMOS_NODE", "")
    ident = env["LLMOS_DRIVER_IDENT"].encode()
    ctx = zmq.Context()
    sock = connect(ctx, ident, env)
    count = type(driver).count(options) if driver.index == 0 else driver.index + 1
    spec = driver.spec() if driver.index < count else None
    hello = proto.DHello(secret=env.get("LLMOS_DRIVER_SECRET", ""), os_pid=os.getpid(), count=count, spec=spec,
                         node=node, kind=type(driver).kind, index=driver.index,
                         kernel=kernel_host(env) if node else "")  # fmt: skip
    sock.send(proto.encoder.encode(hello))
    if spec is None:
        sock.close(linger=1000)
        ctx.term()
        return 0
    stop = threading.Event()
    beats = threading.Thread(target=beat, args=(ctx, ident, env, stop), daemon=True) if node else None
    silent = False
    try:
        if beats is not None:
            beats.start()
        silent = Host(driver, sock).serve(NODE_SILENCE_S if node else KERNEL_SILENCE_S)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if beats is not None:
            beats.join()
        driver.close()
        sock.close()
        ctx.term()
    if node and silent:
        print(f"{node}/{type(driver).kind}{driver.index}: no word from the kernel at {env['LLMOS_KERNEL']} for "
              f"{NODE_SILENCE_S:.0f} s (down, unreachable, or it does not admit this host's key)",
              file=sys.stderr, flush=True)  # fmt: skip
        return GONE_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
