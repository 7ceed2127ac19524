"""The console's model: one client attached to the kernel, refreshed on a timer, shared by every viewer.

Each refresh reads a snapshot (`llmos.userland.snapshot`, the same calls as
`llmos top`, with each KV pool's block picture) and the kernel's timeline
events since the last refresh (`trace_read`), and makes the page's state:
one JSON-able dict. However many browsers watch, the kernel sees one
client asking a few calls per refresh. Times on the timeline are seconds
before the kernel's clock at the refresh (`trace_read`'s `now`), so a
kernel on another machine draws right too.
"""

from __future__ import annotations

import threading
from collections import deque

from llmos.syscalls import Errno

from ..client import Client
from ..errors import LlmosError
from ..snapshot import Snapshot, process_rates, snapshot, syscall_rate, utilisation
from ..trace import from_events, to_chrome

HISTORY_S = 60.0
"""How far back the utilisation charts and the timeline (and the Perfetto download) reach."""


class Console:
    """The attached client (`address`, admin if `admin`), the last state, and what charts need of the past."""

    def __init__(self, address: str, *, kernel: str | None = None, admin: bool = False, name: str = "llmos-web",
                 keys_dir: str | None = None, history_s: float = HISTORY_S):  # fmt: skip
        self.client = Client(address, name=name, kernel=kernel, admin=admin, keys_dir=keys_dir, timeout_s=10)
        self.admin = admin
        self.history_s = history_s
        self.lock = threading.Lock()  # the client is used by one thread at a time
        self.prev: Snapshot | None = None
        self.util: dict[str, deque] = {}  # device -> (kernel time, utilisation) since history_s ago
        self.events: deque[dict] = deque()  # trace events (dicts, as in the kernel's log) since history_s ago
        self.next_event = 0
        self.names: dict[int, str] = {}  # pid -> program name, of every process seen (for the trace)
        self.kernel_now = 0.0

    def close(self) -> None:
        """Detach from the kernel."""
        with self.lock:
            self.client.close()

    # ---- one refresh ---------------------------------------------------------------------

    def refresh(self) -> dict:
        """Read the kernel once and return the page's state."""
        with self.lock:
            cur = snapshot(self.client, blocks=True)
            log = self.client.trace_read(self.next_event)
        self.next_event = log.next
        self.kernel_now = now = log.now
        for e in log.events:
            self.events.append({"event": e.event, "t": e.t, **e.fields})
        while self.events and self.events[0]["t"] < now - self.history_s:
            self.events.popleft()
        busy = utilisation(cur, self.prev)
        for name, share in busy.items():
            points = self.util.setdefault(name, deque())
            points.append((now, share))
            while points[0][0] < now - self.history_s:
                points.popleft()
        state = self._state(cur, busy, now)
        self.prev = cur
        return state

    def _state(self, cur: Snapshot, busy: dict[str, float], now: float) -> dict:
        s = cur.stat
        rates = process_rates(cur, self.prev)
        self.names.update({p.pid: p.name for p in cur.procs})
        kv_blocks: dict[int, int] = {}
        for mem in cur.memory.values():
            for pool in mem.kv_pools:
                for pid, n in pool.by_process.items():
                    kv_blocks[pid] = kv_blocks.get(pid, 0) + n
        procs = [
            {"pid": p.pid, "ppid": p.ppid, "name": p.name, "state": p.state, "mem": p.mem_bytes, "handles": p.handles,
             "calls_s": rates.get(p.pid, (None, None))[0], "tokens_s": rates.get(p.pid, (None, None))[1],
             "tokens": p.tokens, "kv_blocks": kv_blocks.get(p.pid, 0)}
            for p in sorted(cur.procs, key=lambda p: p.pid)
        ]  # fmt: skip
        devices = []
        for d in cur.devices:
            mem = cur.memory.get(d.name)
            sched = cur.policies.get(d.name)
            devices.append({
                "name": d.name, "kind": d.kind, "node": d.node or "local", "state": d.state, "description": d.description,
                "util": busy.get(d.name), "history": [[round(t - now, 2), round(u, 3)] for t, u in self.util.get(d.name, ())],
                "capacity": mem.capacity if mem else d.capacity_bytes, "used": mem.used if mem else d.used_bytes,
                "queued": d.queued, "restarts": d.restarts, "simulated": d.simulated,
                "policy": sched.policy if sched else None, "policies": sched.policies if sched else [],
                "queue": [{"pid": q.pid, "work": q.work, "items": q.items, "model": q.model, "state": q.state}
                          for q in sched.queue] if sched else [],
            })  # fmt: skip
        memory = [
            {"device": mem.device, "capacity": mem.capacity, "used": mem.used, "free": mem.free,
             "by_process": {str(pid): n for pid, n in sorted(mem.by_process.items())},
             "models": [{"model": m.model, "arch": m.arch, "charged": m.charged, "bytes": m.weights + m.kv + m.optimizer,
                         "compression": m.compression} for m in mem.models],
             "pools": [_pool(pool) for pool in mem.kv_pools]}
            for mem in cur.memory.values()
        ]  # fmt: skip
        return {
            "kernel": {"name": s.name, "uptime_s": s.uptime_s, "syscalls": s.syscalls, "syscalls_s": syscall_rate(cur, self.prev),
                       "errors": s.errors, "processes": s.processes, "devices": s.devices},
            "admin": self.admin, "procs": procs, "devices": devices, "memory": memory,
            "timeline": self._timeline(now), "history_s": self.history_s,
        }  # fmt: skip

    def _timeline(self, now: float) -> dict:
        """Device work of the last `history_s` seconds, without the kernel's heartbeat pings: [device, pid, start,
        end, name, band from, band to] (seconds before now; a batched step is one slice per process it served,
        each a band of the lane), and marks (preemption, swap, eviction): [device, t, name]."""
        tl = from_events(list(self.events), t0=now)
        slices = [[s.device, s.pid, round(s.start, 4), round(min(s.end, 0.0), 4), s.name, *s.share] for s in tl.work
                  if s.args.get("work") != "ping"]  # the kernel's heartbeats to driver hosts: not work
        marks = [[i.device, round(i.t, 4), i.name] for i in tl.instants if i.device]
        return {"devices": tl.devices, "slices": slices, "marks": marks}

    # ---- on request ------------------------------------------------------------------------

    def process(self, pid: int) -> dict:
        """One process's handles (`handles(pid)`), and its models, KV blocks and queued work from the last refresh."""
        with self.lock:
            handles = self.client.handles(pid)
            procs = {p.pid: p for p in self.client.ps()}
            memory = self.client.memstat()
        p = procs.get(pid)
        if p is None:  # it ended between the two calls
            raise LlmosError(Errno.ESRCH, f"no running process {pid}")
        queues = self.prev.policies.values() if self.prev else ()
        return {
            "pid": pid, "name": p.name, "ppid": p.ppid, "state": p.state, "os_pid": p.os_pid, "mem": p.mem_bytes,
            "handles": [{"handle": h.handle, "kind": h.kind, "device": h.device, "bytes": h.nbytes, "charged": h.charged,
                         "holders": h.holders, "shape": h.shape, "dtype": h.dtype, "pool": h.pool, "lost": h.lost}
                        for h in handles],
            "models": [{"device": mem.device, "model": m.model, "arch": m.arch, "bytes": m.weights + m.kv + m.optimizer,
                        "compression": m.compression} for mem in memory for m in mem.models if m.charged == pid],
            "kv": [{"device": mem.device, "pool": pool.pool, "blocks": pool.by_process[pid], "block_size": pool.block_size}
                   for mem in memory for pool in mem.kv_pools if pid in pool.by_process],
            "queued": [{"device": q.device, "work": e.work, "items": e.items, "model": e.model, "state": e.state}
                       for q in queues for e in q.queue if e.pid == pid],
        }  # fmt: skip

    def set_policy(self, device: str, policy: str) -> dict:
        """Switch a device's scheduling policy (`sched_set`); only when started with the admin key."""
        if not self.admin:
            raise PermissionError("the console was started without the kernel's admin key")
        with self.lock:
            info = self.client.sched_set(device, policy)
        return {"device": info.device, "policy": info.policy}

    def perfetto(self) -> dict:
        """The last `history_s` seconds as Chrome/Perfetto trace-event JSON (times from the first event kept)."""
        tl = from_events(list(self.events), title=f"llmos web: kernel {self.prev.stat.name if self.prev else ''}")
        tl.processes.update(self.names)
        return to_chrome(tl)


def _pool(pool) -> dict:
    """A KV pool's state for the page: counts and, per block, its owner and mark."""
    return {
        "pool": pool.pool, "block_size": pool.block_size, "block_bytes": pool.block_bytes, "total": pool.total,
        "used": pool.used, "cached": pool.cached, "shared": pool.shared, "sequences": pool.sequences,
        "swapped": pool.swapped, "host_total": pool.host_total, "host_used": pool.host_used,
        "hit_rate": pool.prefix_hits / pool.prefix_tokens if pool.prefix_tokens else None,
        "owners": pool.owners, "marks": pool.marks, "host_owners": pool.host_owners,
        "by_process": {str(pid): n for pid, n in sorted(pool.by_process.items())},
    }  # fmt: skip

