"""Load: many clients pipelining small calls for a fixed time, against a raw ROUTER echo.

`--clients` clients (default 16), spread over `--procs` OS processes (default
4), each keep `--depth` calls in flight (default 4) for `--seconds` seconds.
Each of a client's `depth` lanes cycles through five calls, each sent when the
previous one of its lane is answered: null, alloc (a `--bytes`-byte uint8
tensor on cpu0), write (its bytes as one bulk frame), read, free (with
`--null-only`, null calls alone: the syscall path without device work). The same
client processes, with the same lanes and the same frames (envelope and bulk),
then run against a raw pyzmq ROUTER echo server in its own process (the
`llmos bench syscall` one), which answers every message by sending it back.
Rounds alternate raw and llmos so both see the same machine.
  calls_s     = calls answered within the window / seconds (all clients)
  p50/p99     = latency of one call, from its send to its answer (all rounds)
  load_ratio  = llmos calls/s / raw calls/s, median of the per-round ratios  (target >= 0.5)
  errors      = llmos calls answered with an error, plus calls never answered (target 0)
  kernel RSS  = the kernel process's resident memory after a warm-up run of
                `--warmup` s and after the last round, its clients gone  (growth target < 5 MB)
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from array import array

import msgspec
import psutil
import zmq

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls import runtime

from .syscall import echo_server, stop_echo

MIB = 1 << 20
DRAIN_S = 10.0  # how long a worker waits for the answers still due when its window closes
CYCLE = ("null", "alloc", "write", "read", "free")
NULLS = ("null",)
ref_decoder = msgspec.msgpack.Decoder(m.TensorRef)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench load`."""
    parser.add_argument("--clients", type=int, default=16, help="clients in all (default 16)")
    parser.add_argument("--procs", type=int, default=4, help="OS processes the clients are spread over (default 4)")
    parser.add_argument("--depth", type=int, default=4, help="calls each client keeps in flight (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each timed run (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw and llmos runs (default 2)")
    parser.add_argument("--bytes", type=int, default=256, help="size of the tensor each lane allocates (default 256)")
    parser.add_argument("--warmup", type=float, default=0.5, help="untimed llmos run before the RSS baseline (default 0.5 s)")
    parser.add_argument("--null-only", action="store_true",
                        help="every call is null: the syscall path alone, no device work")


class _Lane:
    """One chain of calls of one client: the next call is sent when the last is answered."""

    __slots__ = ("cycle", "step", "handle", "sent_at")

    def __init__(self, cycle: tuple[str, ...]) -> None:
        self.cycle = cycle
        self.step = 0
        self.handle = 0
        self.sent_at = 0.0

    def frames(self, rid: int, token: bytes, payload: bytes) -> list:
        """The frames of the lane's next call."""
        name = self.cycle[self.step]
        if name == "null":
            return [fr.encode_call(rid, token, m.Null())]
        if name == "alloc":
            return [fr.encode_call(rid, token, m.Alloc(device="cpu0", shape=[len(payload)], dtype="uint8"))]
        if name == "write":
            return [fr.encode_call(rid, token, m.Write(handle=self.handle)), payload]
        if name == "read":
            return [fr.encode_call(rid, token, m.Read(handle=self.handle))]
        return [fr.encode_call(rid, token, m.Free(handle=self.handle))]

    def answered(self, reply) -> bool:
        """Take the answer to the lane's call (a decoded llmos reply; None from the raw echo) and move on;
        return False if it was an error."""
        ok = True
        if reply is not None:
            ok = reply.kind == fr.FINAL
            if ok and self.cycle[self.step] == "alloc":
                self.handle = ref_decoder.decode(reply.body).handle
            elif not ok and self.cycle[self.step] == "alloc":
                self.step = 0  # nothing to write, read or free: start the cycle again
                return False
        self.step = (self.step + 1) % len(self.cycle)
        return ok


def _worker(tasks, results) -> None:
    """A client process: run each (mode, address, clients, depth, seconds, size, cycle, start_at) task it is given."""
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put(_run_clients(*task))


def _run_clients(mode: str, address: str, clients: int, depth: int, seconds: float, size: int,
                 cycle: tuple[str, ...], start_at: float) -> tuple:
    """Run `clients` pipelined clients for `seconds` from `start_at`; (calls, errors, latency bytes)."""
    from llmos.userland.client import Client

    llmos = mode == "llmos"
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ctx = zmq.Context()
    attached = [Client(address, name="bench-load") for _ in range(clients)] if llmos else []
    socks, tokens = [], []
    for i in range(clients):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(address)
        socks.append(sock)
        tokens.append(attached[i].token if llmos else os.urandom(fr.TOKEN_BYTES))
    poller = zmq.Poller()
    for sock in socks:
        poller.register(sock, zmq.POLLIN)
    inflight = [{} for _ in socks]  # per client: rid -> lane
    rids = [1] * clients
    latencies = array("d")
    calls = errors = 0

    def send(i: int, lane: _Lane) -> None:
        rid = rids[i]
        rids[i] += 1
        lane.sent_at = time.perf_counter()
        inflight[i][rid] = lane
        socks[i].send_multipart(lane.frames(rid, tokens[i], payload), copy=False)

    time.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    end = start + seconds
    for i in range(clients):
        for _ in range(depth):
            send(i, _Lane(cycle))
    index = {sock: i for i, sock in enumerate(socks)}
    now = start
    while now < end:
        for sock, _ in poller.poll(max(1, int((end - now) * 1000))):
            i = index[sock]
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                reply = fr.reply_decoder.decode(frames[0]) if llmos else None
                rid = reply.rid if llmos else fr.envelope_decoder.decode(frames[0]).rid
                lane = inflight[i].pop(rid)
                now = time.perf_counter()
                if now >= end:
                    continue
                calls += 1
                latencies.append(now - lane.sent_at)
                if not lane.answered(reply):
                    errors += 1
                send(i, lane)
        now = time.perf_counter()
    # the window is closed: collect the answers still due (not counted), so every call ended
    deadline = time.perf_counter() + DRAIN_S
    while any(inflight) and time.perf_counter() < deadline:
        for sock, _ in poller.poll(100):
            i = index[sock]
            frames = sock.recv_multipart(copy=False)
            rid = fr.reply_decoder.decode(frames[0]).rid if llmos else fr.envelope_decoder.decode(frames[0]).rid
            inflight[i].pop(rid, None)
    errors += sum(len(pending) for pending in inflight)  # never answered
    for sock in socks:
        sock.close()
    ctx.term()
    for client in attached:
        client.close()  # exit: the kernel reclaims what the lanes still held
    return calls, errors, latencies.tobytes()


def _progress(text: str) -> None:
    print(f"\r[bench load] {text:60}", end="", file=sys.stderr, flush=True)


def _spread(clients: int, procs: int) -> list[int]:
    """How many clients each process runs."""
    procs = max(1, min(procs, clients))
    return [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]


def run(args: argparse.Namespace) -> dict:
    """Run the rounds; return the figures described in the module docstring."""
    if args.clients < 1 or args.depth < 1 or args.rounds < 1 or args.seconds <= 0 or args.bytes < 1:
        raise SystemExit("--clients, --depth, --rounds and --bytes must be >= 1 and --seconds > 0")
    cycle = NULLS if args.null_only else CYCLE
    spawn = multiprocessing.get_context("spawn")
    shares = _spread(args.clients, args.procs)
    results = spawn.Queue()
    queues = [spawn.Queue() for _ in shares]
    workers = [spawn.Process(target=_worker, args=(q, results), daemon=True) for q in queues]
    for w in workers:
        w.start()  # they import while the kernel boots
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    raw_address = f"ipc://{tmp}/raw.sock"
    server = spawn.Process(target=echo_server, args=(raw_address, False), daemon=True)
    server.start()
    _progress("booting kernel...")
    kp = boot.start(KernelConfig(name="bench-load", runtime_dir=tmp, drivers=["cpu"], log_level="warning"))
    kernel = psutil.Process(kp.popen.pid)

    def phase(mode: str, seconds: float) -> tuple:
        address = kp.address if mode == "llmos" else raw_address
        start_at = time.time() + 0.3
        for q, n in zip(queues, shares):
            q.put((mode, address, n, args.depth, seconds, args.bytes, cycle, start_at))
        got = [results.get(timeout=seconds + DRAIN_S + 60) for _ in shares]
        latencies = array("d")
        for _, _, raw in got:
            latencies.frombytes(raw)
        return sum(c for c, _, _ in got) / seconds, sum(e for _, e, _ in got), latencies

    try:
        _progress("warm-up...")
        phase("llmos", args.warmup)
        rss_before = kernel.memory_info().rss
        rates = {"raw": [], "llmos": []}
        lat = {"raw": array("d"), "llmos": array("d")}
        errors = 0
        for r in range(args.rounds):
            for mode in ("raw", "llmos"):
                _progress(f"round {r + 1}/{args.rounds}: {mode}")
                rate, errs, latencies = phase(mode, args.seconds)
                rates[mode].append(rate)
                lat[mode].extend(latencies)
                if mode == "llmos":
                    errors += errs
        rss_after = kernel.memory_info().rss
    finally:
        _progress("stopping...")
        for q in queues:
            q.put(None)
        for w in workers:
            w.join(10)
        kp.stop()
        ctx = zmq.Context()
        stop = ctx.socket(zmq.DEALER)
        stop.setsockopt(zmq.LINGER, 1000)
        stop.connect(raw_address)
        stop_echo(stop, server)
        ctx.term()
        runtime.remove(tmp)
        print(file=sys.stderr)

    def pct(values: array, q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 3) if ordered else 0.0

    if not all(rates["raw"]):
        raise RuntimeError("the raw echo answered no call in a round: nothing to compare llmos with")
    return {
        "raw_calls_s": round(statistics.median(rates["raw"])),
        "llmos_calls_s": round(statistics.median(rates["llmos"])),
        "load_ratio": round(statistics.median(b / a for a, b in zip(rates["raw"], rates["llmos"])), 3),
        "raw_p50_ms": pct(lat["raw"], 0.5),
        "raw_p99_ms": pct(lat["raw"], 0.99),
        "llmos_p50_ms": pct(lat["llmos"], 0.5),
        "llmos_p99_ms": pct(lat["llmos"], 0.99),
        "errors": errors,
        "kernel_rss_before_mb": round(rss_before / MIB, 1),
        "kernel_rss_after_mb": round(rss_after / MIB, 1),
        "kernel_rss_growth_mb": round((rss_after - rss_before) / MIB, 1),
        "clients": args.clients,
        "procs": len(shares),
        "depth": args.depth,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "mix": "/".join(cycle),
    }


def report(result: dict) -> str:
    """The figures as a table."""
    return "\n".join(
        [
            (f"{result['clients']} clients in {result['procs']} processes, {result['depth']} calls in flight each, "
             f"{result['seconds']} s x {result['rounds']} rounds; calls {result['mix']}"),
            f"{'':18}{'raw pyzmq':>12}{'llmos':>12}",
            f"{'calls/s':18}{result['raw_calls_s']:>12}{result['llmos_calls_s']:>12}   ratio {result['load_ratio']} (target >= 0.5)",
            f"{'p50 latency (ms)':18}{result['raw_p50_ms']:>12}{result['llmos_p50_ms']:>12}",
            f"{'p99 latency (ms)':18}{result['raw_p99_ms']:>12}{result['llmos_p99_ms']:>12}",
            f"errors: {result['errors']} (target 0)",
            (f"kernel RSS: {result['kernel_rss_before_mb']} MB before, {result['kernel_rss_after_mb']} MB after "
             f"({result['kernel_rss_growth_mb']:+} MB; target < 5)"),
        ]
    )
