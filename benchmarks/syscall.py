"""Syscall path: null round trip and 64 MiB tensor write+read, against raw pyzmq.

Both sides run in this one process against a server process over the same
transport (ipc:// in a private temporary folder):
  raw    a ROUTER echo server in its own process, written the usual way
         (recv_multipart / send_multipart); the client sends one frame
         (RTT) or one 64 MiB frame (bandwidth) and waits for the echo.
  lean   the same echo receiving and sending frame by frame as the kernel
         does (`frames.recv_frames`, plain sends): the stricter baseline for
         RTT, since it leaves out pyzmq's Python work per frame.
  llmos  a booted kernel with the CPU driver; the client calls `null` (RTT),
         or `write` then `read` of a 64 MiB uint8 tensor on cpu0 (bandwidth).
Rounds alternate raw and llmos so both see the same machine. Each absolute
figure is the median over rounds; each ratio is the median of the per-round
ratios, so a burst of load on the machine during one round moves neither.
Bandwidth counts the bytes moved both ways (2 x 64 MiB per round trip) for
both sides.
  rtt_ratio = llmos RTT / raw RTT           (target <= 1.15)
  rtt_ratio_lean = llmos RTT / lean RTT     (no target: the kernel's whole cost over the least a server does)
  bw_ratio  = llmos GiB/s / raw GiB/s       (target >= 0.7)
With `--audit compare` a second kernel, booted without its audit trail,
answers null calls in the same rounds, and both answer calls refused for a
missing right (EPERM, each one a record in the audit trail):
  audit_rtt_ratio = null RTT with the audit trail / without it   (target <= 1.02)
  rtt_ratio_audit_off = the rtt_ratio of the kernel without it
  denied_ratio = refused-call RTT with the audit trail / without it (no target: the cost of one record)
`--audit off` measures a kernel without the trail instead of one with it.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import zmq

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.kernel.priority import raise_priority
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls import runtime
from llmos.userland.client import Client
from llmos.userland.errors import LlmosError

GIB = 1 << 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench syscall`."""
    parser.add_argument("--calls", type=int, default=4500, help="null round trips per side (default 4500)")
    parser.add_argument("--mib", type=int, default=64, help="tensor size in MiB (default 64)")
    parser.add_argument("--rounds", type=int, default=9, help="alternating rounds (default 9)")
    parser.add_argument(
        "--audit", choices=["on", "off", "compare"], default="on",
        help="the kernel's audit trail: on (the default, as `llmos boot`), off, or compare (a second kernel "
             "without it in the same rounds; reports audit_rtt_ratio)",
    )  # fmt: skip


def echo_server(address: str, lean: bool) -> None:
    """A raw ROUTER echo until a `stop` frame: recv_multipart/send_multipart, or frame by frame if `lean`.

    It asks for the kernel's priority first (kernel/priority.py), so the
    baseline server and the kernel get the CPU on the same terms.
    """
    raise_priority(KernelConfig().nice)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(address)
    while True:
        frames = fr.recv_frames(sock) if lean else sock.recv_multipart(copy=False)
        if frames[1].bytes == b"stop":
            break
        if lean:
            for frame in frames[:-1]:
                sock.send(frame, zmq.SNDMORE, copy=False)
            sock.send(frames[-1], copy=False)
        else:
            sock.send_multipart(frames, copy=False)
    sock.close()
    ctx.term()


def stop_echo(sock: zmq.Socket, server) -> None:
    """Tell an echo server to stop through `sock`, wait for its process, close the socket."""
    sock.send_multipart([b"stop"])
    server.join(10)
    sock.close()


def _progress(text: str) -> None:
    print(f"\r[bench syscall] {text:60}", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    """Measure both sides; return the figures."""
    import torch  # here, not at the top: `llmos --help` should not load torch

    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    ctx = zmq.Context()
    servers, sockets = [], []
    for lean in (False, True):
        address = f"ipc://{tmp}/{'lean' if lean else 'raw'}.sock"
        servers.append(multiprocessing.get_context("spawn").Process(target=echo_server, args=(address, lean), daemon=True))
        servers[-1].start()
        sockets.append(ctx.socket(zmq.DEALER))
        sockets[-1].connect(address)
    raw, lean_sock = sockets
    _progress("booting kernel...")
    config = KernelConfig(name="bench", runtime_dir=tmp, drivers=["cpu"], log_level="warning", audit=args.audit != "off")
    kp = boot.start(config)
    bare = None  # the kernel without an audit trail, with --audit compare
    if args.audit == "compare":
        bare = boot.start(KernelConfig(name="bench-noaudit", runtime_dir=tmp, drivers=["cpu"], log_level="warning", audit=False))
    off_rtt, on_denied, off_denied = [], [], []
    try:
        with Client(kp.address, name="bench-syscall") as c, (Client(bare.address, name="bench-syscall") if bare else c) as b:
            small = fr.encode_call(1, c.token, m.Null())  # the same bytes llmos sends for null
            size = args.mib << 20
            payload = torch.randint(0, 256, (size,), dtype=torch.uint8)
            ref = c.alloc("cpu0", [size], "uint8")
            raw_rtt, lean_rtt, llmos_rtt, raw_bw, llmos_bw = [], [], [], [], []
            per_round = max(1, args.calls // args.rounds)
            for client in {c, b}:  # warm both kernels' paths (and let a driver host that just started settle)
                _time_calls(client.null, min(per_round, 500))
            for r in range(args.rounds):
                _progress(f"round {r + 1}/{args.rounds}: null round trips")
                raw_rtt.append(_time_raw_rtt(raw, small, per_round))
                lean_rtt.append(_time_raw_rtt(lean_sock, small, per_round))
                if bare is not None and r % 2:  # the kernel without the trail first in every other round
                    off_rtt.append(_time_calls(b.null, per_round))
                llmos_rtt.append(_time_calls(c.null, per_round))
                if bare is not None:
                    if not r % 2:
                        off_rtt.append(_time_calls(b.null, per_round))
                    on_denied.append(_time_denied(c, max(1, per_round // 10)))
                    off_denied.append(_time_denied(b, max(1, per_round // 10)))
                _progress(f"round {r + 1}/{args.rounds}: {args.mib} MiB write + read")
                raw_bw.append(_time_raw_echo(raw, payload))
                start = time.perf_counter()
                c.write(ref.handle, payload)
                back = c.read(ref.handle)
                llmos_bw.append(time.perf_counter() - start)
                if r == 0 and not torch.equal(back, payload):
                    raise RuntimeError("the tensor read back differs from the one written")
            c.free(ref.handle)
    finally:
        _progress("stopping...")
        kp.stop()
        if bare is not None:
            bare.stop()
        for sock, server in zip(sockets, servers):
            stop_echo(sock, server)
        ctx.term()
        runtime.remove(tmp)
        print(file=sys.stderr)
    moved = 2 * (args.mib << 20) / GIB
    raw_rtt_us = statistics.median(raw_rtt) * 1e6
    llmos_rtt_us = statistics.median(llmos_rtt) * 1e6
    raw_gib_s = moved / statistics.median(raw_bw)
    llmos_gib_s = moved / statistics.median(llmos_bw)
    audit = {}
    if off_rtt:
        audit = {
            "off_rtt_us": round(statistics.median(off_rtt) * 1e6, 1),
            "audit_rtt_ratio": round(statistics.median(a / b for a, b in zip(llmos_rtt, off_rtt)), 3),
            "rtt_ratio_audit_off": round(statistics.median(b / a for a, b in zip(raw_rtt, off_rtt)), 3),
            "denied_on_us": round(statistics.median(on_denied) * 1e6, 1),
            "denied_off_us": round(statistics.median(off_denied) * 1e6, 1),
            "denied_ratio": round(statistics.median(a / b for a, b in zip(on_denied, off_denied)), 3),
        }
    return {
        "audit": args.audit,
        **audit,
        "raw_rtt_us": round(raw_rtt_us, 1),
        "llmos_rtt_us": round(llmos_rtt_us, 1),
        "rtt_ratio": round(statistics.median(b / a for a, b in zip(raw_rtt, llmos_rtt)), 3),
        "lean_rtt_us": round(statistics.median(lean_rtt) * 1e6, 1),
        "rtt_ratio_lean": round(statistics.median(b / a for a, b in zip(lean_rtt, llmos_rtt)), 3),
        "raw_gib_s": round(raw_gib_s, 3),
        "llmos_gib_s": round(llmos_gib_s, 3),
        "bw_ratio": round(statistics.median(a / b for a, b in zip(raw_bw, llmos_bw)), 3),
        "transport": "ipc",
        "calls": per_round * args.rounds,
        "mib": args.mib,
        "rounds": args.rounds,
    }


def _time_raw_rtt(sock: zmq.Socket, msg: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        sock.send(msg)
        sock.recv()
    return (time.perf_counter() - start) / n


def _time_calls(call, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


def _time_denied(c: Client, n: int) -> float:
    """Seconds per call refused for a missing right (driver_load without `driver`: EPERM, audited)."""
    start = time.perf_counter()
    for _ in range(n):
        try:
            c.driver_load("cpu")
        except LlmosError:
            pass
    return (time.perf_counter() - start) / n


def _time_raw_echo(sock: zmq.Socket, payload) -> float:
    buf = memoryview(payload.numpy())
    start = time.perf_counter()
    sock.send(buf, copy=False)
    sock.recv(copy=False)
    return time.perf_counter() - start


def report(result: dict) -> str:
    """The figures as a table."""
    return "\n".join(
        [
            f"transport {result['transport']}, {result['calls']} null calls, {result['mib']} MiB tensor, {result['rounds']} rounds",
            f"{'':18}{'raw pyzmq':>12}{'llmos':>12}{'ratio':>9}   target",
            f"{'null RTT (us)':18}{result['raw_rtt_us']:>12}{result['llmos_rtt_us']:>12}{result['rtt_ratio']:>9}   <= 1.15",
            f"{'  vs a lean echo':18}{result['lean_rtt_us']:>12}{result['llmos_rtt_us']:>12}{result['rtt_ratio_lean']:>9}   (stricter)",
            f"{'write+read GiB/s':18}{result['raw_gib_s']:>12}{result['llmos_gib_s']:>12}{result['bw_ratio']:>9}   >= 0.7",
        ]
        + _audit_lines(result)
    )


def _audit_lines(result: dict) -> list[str]:
    """The audit comparison's rows (with --audit compare), else a line saying which kernel was measured."""
    if "audit_rtt_ratio" not in result:
        return [f"audit trail {result['audit']}"]
    return [
        f"{'':18}{'no audit':>12}{'audit':>12}{'ratio':>9}",
        f"{'null RTT (us)':18}{result['off_rtt_us']:>12}{result['llmos_rtt_us']:>12}{result['audit_rtt_ratio']:>9}   <= 1.02",
        f"{'refused RTT (us)':18}{result['denied_off_us']:>12}{result['denied_on_us']:>12}{result['denied_ratio']:>9}   (one record each)",
        f"rtt_ratio without the audit trail: {result['rtt_ratio_audit_off']}",
    ]
