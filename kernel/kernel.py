"""The kernel process: one ROUTER socket, the tables, the loop.

Every message arrives on one ROUTER socket: calls from userland processes and
answers from driver hosts (told apart by their routing ids, which the kernel
chose and only its driver hosts know). A call is decoded, its token checked,
and handed to its `sys_<name>` handler through the dispatch table. Device
work goes through each device's queue to its driver host. Between messages,
`tick` watches processes (exit, crash, lost lease) and driver hosts
(heartbeats, restarts; see supervisor.py). No input from a client can stop the loop: every bad
call gets a typed error and the loop goes on.
"""

import os
import resource
import secrets
import signal
import subprocess
import time
from collections import Counter

import msgspec
import structlog
import zmq

from llmos.services.memory.kv_pools import KVPools
from llmos.syscalls import ABI_VERSION, Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls.table import BY_NR

from llmos.syscalls import runtime

from . import nodes, plugins, sysmodel, sysrights
from .audit import AuditLog
from .config import KernelConfig
from .devices import ABSENT, OFFLINE, ONLINE, Device, Work
from .dispatch import DISPATCH, CallCtx
from .errors import SysError
from .gang import CollectiveLine
from .proc import KERNEL_PID, Process, ProcessTable
from .supervisor import DeviceSupervision
from .syskv import reap_pools
from .sysproc import cancel_waiters, finish_waits, os_exit_reason, tick_waits
from .tensors import Tensor, TensorTable
from .tracering import TraceRing
from .watch import ProcessWatch

TICK_S = 0.05
KILL_GRACE_S = 2.0
SUMMARY_CHARS = 200  # of each argument of a refused call in the audit trail
LEASE_CHECK_S = 1.0  # how often leases are checked (and exited processes swept) in the tick


class Kernel(DeviceSupervision):
    """The kernel: state, socket and loop. `open`, then `serve`, then `close`."""

    def __init__(self, config: KernelConfig, pm=None):
        self.config = config
        self.pm = pm or plugins.plugin_manager()
        self.log = structlog.get_logger("llmos.kernel").bind(kernel=config.name)
        self.procs = ProcessTable()
        self.tensors = TensorTable()
        self.kv = KVPools()
        self.kv_tensors: dict[tuple[str, str], Tensor] = {}  # (device, pool) -> the pool's device memory
        self.next_kvseq = 1
        self.models: dict[int, sysmodel.Model] = {}  # model id -> a model loaded on a device (or replicated on several)
        self.collectives = CollectiveLine()  # replicated models' group joins and steps, one at a time (kernel/gang.py)
        self.next_model = 1
        self.devices: dict[str, Device] = {}
        self.drivers: dict = {}  # kind -> DriverEntry, from the plugins
        self.loading: dict[str, list[CallCtx]] = {}  # driver_load calls waiting for their devices
        self.driver_idents: dict[bytes, Device] = {}
        self.programs = plugins.programs(self.pm)
        self.policies = plugins.policies(self.pm)
        self.waiters: list = []  # pending wait calls (sysproc)
        self.watch = ProcessWatch()  # the OS processes of the process table (kernel/watch.py)
        self.next_lease_check = 0.0
        self.counts: Counter = Counter()
        self.errors = 0
        self.started = time.monotonic()
        self.tracing = config.log_level == "debug"  # timeline events cost nothing unless they are logged
        self.recent = TraceRing()  # ... except device, scheduling and KV ones, kept for trace_read
        self.stopping = False
        self.stop_signal = 0  # the signal that asked the loop to stop, logged once it has
        self.ready = False
        self.next_tick = 0.0
        self.ctx = zmq.Context()
        self.sock: zmq.Socket | None = None
        self.dir = runtime.kernel_dir(config.name, config.runtime_dir)
        self.shm = runtime.shm_dir(config.name)
        self.storage = config.storage_dir or os.path.join(self.dir, "storage")
        self.models_dir = config.models_dir  # read only; None: model_load(path=...) is refused
        self.address = ""
        self.auth = None
        self.host_keys: set[bytes] | None = None  # z85 keys remote driver hosts may join with (None: no keys, insecure)
        self.admin_key = secrets.token_hex(16)
        self.audit: AuditLog | None = None  # the audit trail (kernel/audit.py), from `open` unless config.audit is off
        self.storage_key: bytes | None = None  # seals checkpoints (drivers/models/sealed.py), from `open`; None: plain

    # ---- life cycle --------------------------------------------------------------------

    def open(self) -> None:
        """Make the runtime dir, bind the socket, start the driver hosts."""
        open_files = _raise_open_files()
        runtime.ensure_private(runtime.base_dir(self.config.runtime_dir))
        runtime.ensure_private(self.dir)
        state = runtime.read_state(self.dir)
        if state and _alive(state.get("os_pid", 0)):
            raise runtime.RuntimeDirError(
                f"a kernel named {self.config.name!r} already runs (os pid {state['os_pid']}); "
                "stop it or boot with another --name"
            )
        runtime.ensure_private(os.path.join(self.dir, "procs"))
        runtime.ensure_private(self.shm)
        os.makedirs(self.storage, mode=0o700, exist_ok=True)
        if self.models_dir is not None and not os.path.isdir(self.models_dir):
            raise ValueError(f"the models directory {self.models_dir!r} is not a folder")
        runtime.write_secret(self.dir, runtime.ADMIN_KEY_FILE, self.admin_key)
        if self.config.audit:
            self.audit = AuditLog(self.dir, self.config.audit_max_bytes, convert=_audit_value,
                                  on_error=lambda exc: self.log.error("audit.write_failed", error=str(exc)))
        if self.config.storage_key or self.config.encrypt_storage:
            from llmos.drivers.models import sealed

            key_file = self.config.storage_key or os.path.join(self.dir, runtime.STORAGE_KEY_FILE)
            self.storage_key = sealed.load_key(key_file, create=True)  # ValueError: a key file others can read
        self.audit_event("kernel_boot", name=self.config.name, os_pid=os.getpid(), tcp=self.config.tcp or "",
                         keys=self.config.keys_dir or "", insecure=self.config.insecure,
                         sealed_storage=self.storage_key is not None, refuse_plain=self.config.refuse_plain)  # fmt: skip
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, int(TICK_S * 1000))
        # ZeroMQ refuses a frame larger than this as soon as its header arrives, before buffering any of it, and
        # drops the sender; frames up to 1 MiB over the limits get a typed E2BIG (docs/abi.md: limits)
        self.sock.setsockopt(zmq.MAXMSGSIZE, max(self.config.max_bulk_bytes, fr.MAX_HEADER_BYTES) + fr.MAX_HEADER_BYTES)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        ipc = os.path.join(self.dir, "kernel.sock")
        self.sock.bind(f"ipc://{ipc}")  # plain: only this user can reach it (0700 folder, 0600 socket)
        os.chmod(ipc, 0o600)
        self.address = f"ipc://{ipc}"
        tcp_address = ""
        if self.config.tcp:
            self._setup_tcp_security()  # security options apply to the endpoints bound after them: TCP only
            tcp_address = f"tcp://{self.config.tcp}"
            self.sock.bind(tcp_address)
        self._write_state(tcp=tcp_address)
        self._start_drivers()
        self.log.info(
            "kernel.boot",
            address=self.address,
            tcp=tcp_address or None,
            os_pid=os.getpid(),
            abi=ABI_VERSION,
            open_files=open_files,
        )
        self._check_ready()  # at once when there are no drivers to wait for

    def _setup_tcp_security(self) -> None:
        from .security import curve_server

        if not self.config.keys_dir:
            if not self.config.insecure:
                raise runtime.RuntimeDirError(
                    "refusing to listen on tcp without CurveZMQ keys: run `llmos keygen` and boot with --keys DIR, "
                    "or pass --insecure to accept anyone who can reach the port"
                )
            self.log.warning("kernel.insecure_tcp", tcp=self.config.tcp)
            return
        self.auth, self.host_keys = curve_server(self.ctx, self.sock, self.config.keys_dir, self._refused, self._admitted)

    def _refused(self, key: str) -> None:
        """The authenticator refused a CurveZMQ key (its thread calls this)."""
        self.log.warning("tcp.refused", key=key)
        self.audit_event("tcp_peer", key=key, admitted=False)

    def _admitted(self, key: str) -> None:
        """The authenticator admitted a CurveZMQ key (its thread calls this)."""
        self.audit_event("tcp_peer", key=key, admitted=True)

    def audit_event(self, event: str, **fields) -> None:
        """Append one record to the audit trail (nothing when auditing is off)."""
        if self.audit is not None:
            self.audit.append(event, **fields)

    def audit_refusal(self, pid: int | None, syscall: str, errno: Errno, message: str, req: m.Call | None) -> None:
        """Record a refused call (EPERM, EBADF): who, which syscall, why, and what it asked (long values cut)."""
        self.audit_event("denied", pid=pid, syscall=syscall, errno=errno.name, message=message,
                         call=req if req is not None else {})  # summarised when written (_audit_value)

    def _start_drivers(self) -> None:
        self.drivers = plugins.drivers(self.pm)
        kinds = self.config.drivers if self.config.drivers is not None else list(self.drivers)
        for kind in kinds:
            self.load_driver(kind)

    def new_policy(self, name: str):
        """An instance of the scheduling policy `name`, with the config's options for it."""
        if name not in self.policies:
            raise ValueError(f"no scheduling policy {name!r}; plugins provide {', '.join(sorted(self.policies))}")
        return self.policies[name](**self.config.policy_options.get(name, {}))

    def _write_state(self, **extra) -> None:
        runtime.write_state(
            self.dir,
            {
                "name": self.config.name,
                "address": self.address,
                "os_pid": os.getpid(),
                "abi": ABI_VERSION,
                "ready": self.ready,
                "devices": [d.name for d in self.devices.values() if d.state == ONLINE],
                **extra,
            },
        )

    def serve(self) -> None:
        """Run the loop until SIGINT/SIGTERM or `stopping` is set."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        sock = self.sock
        while not self.stopping:
            try:
                frames = fr.recv_frames(sock)
            except zmq.Again:
                frames = None
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EINTR:
                    continue
                raise
            if frames is not None:
                self.on_message(frames)
            now = time.monotonic()
            if now >= self.next_tick:
                self.next_tick = now + TICK_S
                self.tick(now)
        if self.stop_signal:
            self.log.info("kernel.signal", signal=signal.Signals(self.stop_signal).name)

    def _on_signal(self, signum, frame) -> None:
        # only a flag: the handler runs between any two bytecodes of the loop, maybe inside a log
        # write that holds the logger's lock, so logging here could deadlock (serve logs it after)
        self.stop_signal = signum
        self.stopping = True

    def close(self) -> None:
        """Stop every process and driver host, answer pending calls, clean up."""
        self.log.info("kernel.shutdown")
        cancel_waiters(self, Errno.EIO, "the kernel is shutting down")
        for dev in self.devices.values():
            self._fail_device_work(dev, "the kernel is shutting down")
        for proc in self.procs.live():
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.terminate()
            self.reclaim(proc, -int(signal.SIGTERM), "kernel shutdown")
        deadline = time.monotonic() + KILL_GRACE_S
        for proc in list(self.procs.by_pid.values()):
            if proc.popen is not None:
                _wait_or_kill(proc.popen, deadline)
        for dev in self.devices.values():
            if dev.popen is not None and dev.popen.poll() is None:
                dev.popen.terminate()
        for dev in self.devices.values():
            if dev.popen is not None:
                _wait_or_kill(dev.popen, deadline)
        for t in list(self.tensors.by_tid.values()):
            self.tensors.drop(t)
        for dev in self.devices.values():
            if dev.hostmem is not None:
                dev.hostmem.close()  # its files go with the shared-memory folder, below
        self.watch.close()
        if self.auth is not None:
            self.auth.stop()
        self.audit_event("kernel_stop", name=self.config.name)
        if self.audit is not None:
            self.audit.close()
        if self.sock is not None:
            self.sock.close()
        self.ctx.term()
        runtime.remove(self.shm)
        for leftover in ("kernel.sock", runtime.STATE_FILE, runtime.ADMIN_KEY_FILE):
            try:
                os.unlink(os.path.join(self.dir, leftover))
            except FileNotFoundError:
                pass
        self.log.info("kernel.stopped")

    # ---- timeline events ---------------------------------------------------------------

    def trace(self, event: str, **fields) -> None:
        """A timeline event (debug level, with the monotonic time `t`), logged only at debug level;
        device, scheduling and KV events also go into the ring `trace_read` reads."""
        kept = self.recent.keeps(event)
        if not (kept or self.tracing):
            return
        t = time.monotonic()
        if kept:
            self.recent.add(t, event, fields)
        if self.tracing:
            self.log.debug(event, t=t, **fields)

    def trace_mem(self, event: str, dev: Device, pid: int, nbytes: int) -> None:
        """A memory event (mem.alloc / mem.free) on a device, with its usage after it."""
        if self.tracing:
            self.trace(event, device=dev.name, pid=pid, bytes=nbytes, used=dev.memory.used)

    # ---- sending -------------------------------------------------------------------------

    def send_reply(self, ident: bytes, rid: int, kind: int, body: m.Reply, bulk: tuple = ()) -> None:
        """Send one reply frame set to a client."""
        fr.send_frames(self.sock, [ident, fr.encode_reply(rid, kind, body), *bulk])

    # ---- receiving -----------------------------------------------------------------------

    def on_message(self, frames: list) -> None:
        """One message from the socket: a driver's answer or a client's call."""
        ident = frames[0].bytes
        dev = self.driver_idents.get(ident)
        if dev is not None:
            self.on_driver(dev, frames)
        elif ident.startswith(nodes.NODE_PREFIX):
            nodes.on_node(self, ident, frames)
        else:
            self.on_call(ident, frames)

    def on_call(self, ident: bytes, frames: list) -> None:
        """Decode, check and dispatch one call. Never raises."""
        if len(frames) < 2:
            return self._reject(ident, 0, Errno.EPROTO, "empty message: a call needs an envelope frame")
        head = frames[1]
        if len(head) > fr.MAX_HEADER_BYTES:
            return self._reject(ident, 0, Errno.E2BIG, f"envelope frame of {len(head)} bytes; the limit is {fr.MAX_HEADER_BYTES}")
        try:
            env = fr.envelope_decoder.decode(head)  # a Frame is a buffer; .buffer would cost a memoryview
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return self._bad_envelope(ident, head.buffer, exc)
        if env.abi != ABI_VERSION:
            return self._reject(ident, env.rid, Errno.EPROTO, _abi_message(env.abi))
        row, handler = DISPATCH[type(env.call)]
        proc = None
        if row.request is not m.Attach:
            proc = self.procs.by_token.get(env.token)
            if proc is None:
                problem = self._token_problem(env.token)
                if self.audit is not None:
                    self.audit_refusal(None, row.name, Errno.EPERM, problem, None)
                return self._reject(ident, env.rid, Errno.EPERM, problem)
            proc.last_seen = time.monotonic()
            proc.syscalls += 1
        bulk = frames[2:]
        if len(bulk) != row.bulk_in:
            return self._reject(
                ident, env.rid, Errno.EPROTO, f"{row.name} takes {row.bulk_in} bulk frame(s), got {len(bulk)}"
            )
        for frame in bulk:
            if len(frame) > self.config.max_bulk_bytes:
                return self._reject(
                    ident, env.rid, Errno.E2BIG, f"bulk frame of {len(frame)} bytes; the limit is {self.config.max_bulk_bytes}"
                )
        self.counts[row.nr] += 1
        if self.tracing:
            self.trace("syscall", pid=proc.pid if proc else None, syscall=row.name, rid=env.rid)
        ctx = CallCtx(self, ident, env.rid, proc, env.call, bulk, row)
        try:
            if (row.right or row.device_right) and proc is not None:
                sysrights.check(self, proc, row, env.call)
            handler(self, ctx)
        except SysError as exc:
            ctx.fail(exc.errno, exc.message)
        except Exception as exc:  # a kernel bug must not take the kernel down
            self.log.exception("kernel.bug", syscall=row.name, pid=proc.pid if proc else None)
            ctx.fail(Errno.EIO, f"internal kernel error in {row.name}: {exc!r}")

    def _reject(self, ident: bytes, rid: int, errno: Errno, message: str) -> None:
        self.errors += 1
        self.log.debug("call.rejected", errno=errno.name, message=message)
        self.send_reply(ident, rid, fr.ERROR, m.Error(errno=int(errno), message=message))

    def _bad_envelope(self, ident: bytes, buf, exc: Exception) -> None:
        """Answer a call that did not decode with the most precise errno."""
        try:
            loose = fr.loose_envelope_decoder.decode(buf)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._reject(ident, 0, Errno.EPROTO, f"frame 0 is not an llmos envelope [abi, rid, token, call]: {exc}")
        if loose.abi != ABI_VERSION:
            return self._reject(ident, loose.rid, Errno.EPROTO, _abi_message(loose.abi))
        try:
            call = fr.any_decoder.decode(loose.call)
        except msgspec.DecodeError:
            call = None
        nr = call.get("nr") if isinstance(call, dict) else None
        if not isinstance(nr, int) or isinstance(nr, bool):
            return self._reject(ident, loose.rid, Errno.EPROTO, "the call is not a map with an integer `nr` field")
        if nr not in BY_NR:
            return self._reject(ident, loose.rid, Errno.ENOSYS, f"no syscall number {nr} (this kernel knows 0..{max(BY_NR)})")
        self._reject(ident, loose.rid, Errno.EINVAL, f"bad arguments to {BY_NR[nr].name}: {exc}")

    def _token_problem(self, token: bytes) -> str:
        why = self.procs.stale.get(token)
        if why:
            return f"stale token: {why}"
        return "unknown token: attach first (a token is only valid for the process it was given to)"

    # ---- devices -------------------------------------------------------------------------

    def _check_ready(self) -> None:
        if not self.ready and all(d.state in (ONLINE, ABSENT, OFFLINE) for d in self.devices.values()):
            self.ready = True
            self._write_state()
            online = [d.name for d in self.devices.values() if d.state == ONLINE]
            self.pm.hook.llmos_kernel_started.call_historic(
                kwargs=dict(name=self.config.name, address=self.address, devices=online)
            )
            self.log.info("kernel.ready", devices=online)

    # ---- tensors and handles ---------------------------------------------------------------

    def tensor(self, proc: Process, handle: int) -> Tensor:
        """The live tensor behind one of the caller's handles; else EBADF or EIO."""
        tid = proc.handles.get(handle)
        if tid is None:
            if handle in proc.kvseqs:
                raise SysError(Errno.EBADF, f"handle {handle} is a KV sequence, not a tensor; use the kv_* calls")
            raise SysError(Errno.EBADF, f"handle {handle} is not open in process {proc.pid}")
        t = self.tensors.by_tid[tid]
        if t.lost:
            raise SysError(Errno.EIO, f"handle {handle}: tensor lost, {t.lost}")
        return t

    def release_ref(self, pid: int, t: Tensor) -> None:
        """One handle on `t` was closed by `pid`: free the tensor when nobody holds it.

        When its allocator lets go while others still hold it, the kernel takes the charge (pid 0):
        a process is never charged for memory it did not allocate (docs/memory.md).
        """
        match t.let_go(pid):
            case "free":
                self.free_tensor(t)
            case "kernel" if not t.lost:
                self.devices[t.device].memory.transfer(t.tid, KERNEL_PID)
                self.unpark(self.devices[t.device])  # its quota has room again

    def free_tensor(self, t: Tensor) -> None:
        """Give a tensor's memory back: a host-visible one's place once no device work names it
        (`settle`), another one by a free on its device, in queue order."""
        self.tensors.drop(t)
        if t.lost:
            return
        dev = self.devices[t.device]
        dev.memory.release(t.tid)
        self.trace_mem("mem.free", dev, t.owner, t.nbytes)
        if dev.hostmem is None:
            self.post(dev, proto.DFree(seq=dev.next_seq(), tid=t.tid))
        elif not t.busy:
            self.give_back(dev, t)
        self.unpark(dev)

    def settle(self, work: Work) -> None:
        """A work item is over (done, failed or skipped): a tensor freed meanwhile gives its place back now."""
        for t in work.tensors:
            t.busy -= 1
            if not t.busy and t.home is not None and t.tid not in self.tensors.by_tid:
                self.give_back(self.devices[t.device], t)

    def give_back(self, dev: Device, t: Tensor) -> None:
        """Return a host-visible tensor's place; tell the host when its file is gone, so it unmaps it."""
        home, t.home = t.home, None
        if t.shm and home.give(t.shm, t.shm_offset) and dev.state == ONLINE:
            self.post(dev, proto.DForget(seq=dev.next_seq(), path=t.shm))

    def park(self, dev: Device, ctx: CallCtx, size: int, run) -> None:
        """Hold an allocation that does not fit yet; `run` it, admitted, once it does."""
        dev.parked.add(ctx.proc.pid, size, (ctx, run))

    def unpark(self, dev: Device) -> None:
        """Run the parked allocations admitted now, earliest first; one that does not fit holds back
        nobody, and one passed too often reserves its size (services/memory/waits.py)."""
        while dev.memory is not None and (w := dev.parked.next_ready(dev.memory)) is not None:
            ctx, run = w.payload
            try:
                run()
            except SysError as exc:
                ctx.fail(exc.errno, exc.message)

    # ---- processes -----------------------------------------------------------------------

    def reclaim(self, proc: Process, status: int, reason: str) -> None:
        """A process is gone: revoke its token and take back all it held."""
        if proc.state == "exited":
            return
        proc.state = "exited"
        proc.status = status
        proc.reason = reason
        gone = f"process {proc.pid} ({proc.name}) exited: {reason}"
        self.procs.revoke(proc, gone)
        for dev in self.devices.values():  # first: the frees below must not run its waiting allocations
            for w in dev.parked:
                if w.owner == proc.pid:
                    dev.parked.discard(w)
        for work in [w for dev in self.devices.values() for w in dev.queue if w.owner == proc.pid and not w.always]:
            work.cancelled = True  # skipped when it reaches the head of the queue
            work.fail(Errno.ESRCH, gone)  # gives back what the call had reserved
        self.kv.free_owner(proc.pid)
        reap_pools(self, proc.pid)  # before being_made: a pool it created is charged to it, with no handle
        for t in self.tensors.being_made(proc.pid):  # in flight: the free is queued behind it (sysmem.created)
            self.free_tensor(t)
        for tid in list(proc.handles.values()):
            self.release_ref(proc.pid, self.tensors.by_tid[tid])
        proc.handles.clear()
        self.kv.forget_owner(proc.pid)
        proc.kvseqs.clear()
        sysmodel.free_models(self, proc)
        for dev in self.devices.values():
            if dev.memory is not None:
                dev.memory.forget_owner(proc.pid)
                self.unpark(dev)  # a reservation it held is gone
        if proc.popen is not None and proc.popen.poll() is None and reason.startswith("lease"):
            proc.popen.kill()  # a stopped child dies too; its wait reports the lease, with this kill's status
            proc.status = status = -int(signal.SIGKILL)
        if proc.popen is None:
            self.watch.discard(proc.pid)  # its OS process lives on; a spawned one is watched until it ends (reap)
        for child in self.procs.children(proc.pid):
            child.ppid = 0
        self.log.info("process.exit", pid=proc.pid, name=proc.name, status=status, reason=reason, t=time.monotonic())
        self.audit_event("exit", pid=proc.pid, name=proc.name, status=status, reason=reason)
        self.pm.hook.llmos_process_exit(pid=proc.pid, name=proc.name, status=status, reason=reason)
        self.reap()

    def reap(self) -> None:
        """Remove exited processes nobody can wait for; answer waits that can be answered."""
        finish_waits(self)
        for proc in list(self.procs.by_pid.values()):
            if proc.state != "exited":
                continue
            os_done = proc.popen is None or proc.popen.poll() is not None
            parent = self.procs.by_pid.get(proc.ppid)
            if os_done and (parent is None or parent.state == "exited"):
                self.procs.remove(proc)

    # ---- timers --------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Watch processes, driver hosts and (embedded kernels) the parent; runs every TICK_S."""
        if self.config.parent_os_pid and os.getppid() != self.config.parent_os_pid and not self.stopping:
            self.log.warning("kernel.orphaned", parent_os_pid=self.config.parent_os_pid)
            self.stopping = True  # the process that started this embedded kernel is gone
        ended = self.watch.ended()  # only the processes whose OS process ended: no cost per process
        for pid in ended:
            proc = self.procs.by_pid.get(pid)
            if proc is None or proc.state == "exited":
                continue
            if proc.popen is not None:
                status = proc.popen.wait()  # it has ended: this reaps it at once
                self.reclaim(proc, status, os_exit_reason(status))
            else:
                self.reclaim(proc, -1, "the OS process ended without calling exit")
        if now >= self.next_lease_check:
            self.next_lease_check = now + LEASE_CHECK_S
            for proc in self.procs.live():
                if proc.state == "running" and now - proc.last_seen > self.config.lease_s:
                    self.reclaim(proc, -1, f"lease expired: no call for {self.config.lease_s:.0f} s")
            self.reap()
        elif ended:
            self.reap()
        tick_waits(self, now)
        for dev in list(self.devices.values()):
            self._watch_device(dev, now)



def _audit_value(value):
    """A value of an audit record that JSON cannot hold: a call, summarised (`_summary`); anything else, its str."""
    return _summary(value) if isinstance(value, m.Call) else str(value)


def _summary(req: m.Call) -> dict:
    """A call's arguments for the audit trail: JSON-able, each value cut to SUMMARY_CHARS characters of JSON."""
    out = {}
    for key, value in msgspec.to_builtins(req).items():
        text = msgspec.json.encode(value).decode()
        out[key] = value if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "..."
    return out


def _abi_message(abi: int) -> str:
    return f"ABI version {abi} is not spoken here; this kernel speaks version {ABI_VERSION}"


def _alive(os_pid: int) -> bool:
    try:
        os.kill(os_pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    return os_pid > 0


def _raise_open_files() -> int:
    """Raise the soft limit of open files to the hard one (each connection costs one); return the limit in force.

    ZeroMQ aborts the whole process when it cannot accept a connection, so the kernel takes all it may
    have, and `sysproc.check_room` refuses attaches before they run out.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # an unlimited hard limit the system does not allow as a soft one
            pass
    return soft


def _wait_or_kill(popen: subprocess.Popen, deadline: float) -> None:
    try:
        popen.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
