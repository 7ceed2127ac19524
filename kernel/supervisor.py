"""Device supervision, MINIX reincarnation-server style: the kernel's side of every driver host.

Starting driver hosts and matching their answers to the work in flight
(`on_driver`), feeding each device one work item at a time from its queue,
posted items (frees, allocations) sent right behind each other (`submit`,
`pump`), pinging idle hosts and declaring dead or hung ones
offline (`_watch_device`, `device_offline`): their work fails with EIO,
their tensors are lost, and a new host starts after a capped exponential
backoff. Drivers are loaded and unloaded here too (hot swap). `Kernel`
inherits these methods; they use its tables.
"""

import os
import time

import msgspec

from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls.frames import send_frames
from llmos.syscalls import runtime

from . import nodes, sysmodel
from .devices import ABSENT, OFFLINE, ONLINE, STARTING, Device, Work
from .hostmem import HostMemory
from .errors import SysError
from .proc import KERNEL_PID
from .sysdev import device_info, driver_list

START_TIMEOUT_S = 60.0  # a host that has not said hello by then is replaced


class DeviceSupervision:
    """The device half of the kernel: driver hosts, device queues, restarts, hot swap."""

    def load_driver(self, kind: str) -> None:
        """Start the first device of a driver kind (its host says how many more there are)."""
        if kind not in self.drivers:
            raise ValueError(f"no driver of kind {kind!r}; plugins provide {', '.join(sorted(self.drivers))}")
        self._add_device(self.drivers[kind], 0)

    def unload_driver(self, kind: str) -> list[str]:
        """Stop every device of a kind: its work fails and its tensors are lost. Returns the device names."""
        names = [d.name for d in self.devices.values() if d.kind == kind and not d.node]  # not remote nodes' devices
        for name in names:
            dev = self.devices.pop(name)
            dev.kill_host()
            self.driver_idents.pop(dev.ident, None)
            if dev.state != ABSENT:
                self._lose_device(dev, f"device {name} was unloaded")
            self.log.info("device.unloaded", device=name, t=time.monotonic())
        for ctx in self.loading.pop(kind, []):
            ctx.fail(Errno.EIO, f"driver {kind} was unloaded while loading")
        return names

    def _add_device(self, entry, index: int) -> Device:
        name = f"{entry.kind}{index}"
        queue = self.pm.hook.llmos_device_queue(device=name, policy=self.new_policy(self.config.policies.get(name, self.config.policy)))
        dev = Device(name, entry.kind, index, entry, queue, dict(self.config.driver_options.get(entry.kind, {})))
        self.devices[name] = dev
        self._start_host(dev)
        return dev

    def _start_host(self, dev: Device) -> None:
        dev.start_host(self.address, runtime.ensure_private(self.shm_of(dev)))
        self.driver_idents[dev.ident] = dev
        self.log.info("device.starting", device=dev.name, driver=dev.entry.target, os_pid=dev.os_pid)

    def shm_of(self, dev: Device) -> str:
        """The device's own folder in the kernel's shared memory, where its host keeps host-visible tensors."""
        return os.path.join(self.shm, dev.name)

    def send_driver(self, dev: Device, msg: proto.ToDriver, bulk: tuple = ()) -> None:
        """Send one message to a device's driver host."""
        send_frames(self.sock, [dev.ident, proto.encoder.encode(msg), *bulk], copy=False)  # bulk frames pass through

    def on_driver(self, dev: Device, frames: list) -> None:
        """One message from a driver host."""
        try:
            msg = proto.from_driver_decoder.decode(frames[1].buffer)
        except (msgspec.DecodeError, msgspec.ValidationError, IndexError):
            self.log.error("device.bad_message", device=dev.name)
            return
        now = time.monotonic()
        if isinstance(msg, proto.DBeat):  # not an answer: the idle ping (and its round trip) goes on regardless
            dev.last_beat = now
            return
        dev.last_heard = now
        if isinstance(msg, proto.DHello):
            return nodes.join(self, dev.ident, msg, frames) if dev.node else self._on_hello(dev, msg)
        work = dev.posted.pop(msg.seq, None)
        if work is None:
            work = dev.inflight
            if work is None or work.msg is None or work.msg.seq != msg.seq:
                return  # an answer to work already failed (the host was declared hung)
            dev.inflight = None
            if isinstance(work.msg, proto.DPing):
                dev.rtt_s = now - dev.inflight_since
            self._trace_work("device.idle", dev, work, ok=isinstance(msg, proto.DOk))
        try:
            if isinstance(msg, proto.DOk):
                dev.busy_s += msg.wall_s
                dev.sim_busy_s += msg.sim_s
                work.done(msg, frames[2:])
            else:
                work.fail(Errno(msg.errno) if msg.errno in Errno._value2member_map_ else Errno.EIO, msg.message)
        except Exception:
            self.log.exception("kernel.bug", device=dev.name)
        self.settle(work)
        self.pump(dev)

    def _on_hello(self, dev: Device, hello: proto.DHello) -> None:
        if hello.secret != dev.secret:
            self.log.error("device.bad_secret", device=dev.name)
            return
        if hello.spec is None:
            dev.state = ABSENT
            self.log.info("device.absent", device=dev.name, reason="the driver found no device")
        else:
            self.device_online(dev, hello.spec, hello.os_pid)
        if dev.index == 0:
            for index in range(1, hello.count):
                if f"{dev.kind}{index}" not in self.devices:
                    self._add_device(dev.entry, index)
        self._check_ready()
        self._answer_loads(dev.kind)
        self.pump(dev)

    def device_online(self, dev: Device, spec: proto.DeviceSpec, os_pid: int) -> None:
        """A driver host said hello with its device: give the device a memory service and take work for it."""
        dev.spec = spec
        dev.os_pid = os_pid
        dev.memory = self.pm.hook.llmos_memory_service(
            device=dev.name, capacity=spec.capacity_bytes, default_quota=self.config.default_quota
        )
        dev.memory.set_quota(KERNEL_PID, spec.capacity_bytes)  # KV pools are the kernel's
        dev.hostmem = HostMemory(self.shm_of(dev)) if spec.host_visible else None
        dev.state = ONLINE
        dev.up_since = time.monotonic()
        dev.start_s = dev.up_since - dev.started_at
        where = {"node": dev.node, "address": dev.address} if dev.node else {}
        self.log.info("device.online", device=dev.name, capacity=spec.capacity_bytes, restarts=dev.restarts,
                      os_pid=os_pid, t=time.monotonic(), **where)  # fmt: skip

    def _answer_loads(self, kind: str) -> None:
        """Answer driver_load calls once no device of the kind is still starting."""
        if kind in self.loading and all(d.state != STARTING for d in self.devices.values() if d.kind == kind):
            for ctx in self.loading.pop(kind):
                ctx.reply(driver_list(self))

    def submit(self, dev: Device, work: Work) -> None:
        """Queue device work; it runs when it reaches the head of the device's queue.

        A kernel-local item (a host-visible device's copy) that finds its device idle with nothing
        queued runs at once, without the queue: the policy could only have picked it, and is not
        charged for it (docs/scheduler.md).
        """
        for t in work.tensors:
            t.busy += 1
        if work.local is not None and dev.inflight is None and dev.state == ONLINE and not dev.queue:
            return self._run_local(dev, work)
        dev.queue.push(work, time.monotonic())
        self.pump(dev)

    def post(self, dev: Device, msg: proto.ToDriver) -> None:
        """Queue a free (DFree, DModelFree): it runs whatever became of the caller, and is posted, so it
        does not hold the device (`Work.posted`)."""
        self.submit(dev, Work(owner=KERNEL_PID, msg=msg, always=True, posted=True))

    def pump(self, dev: Device) -> None:
        """Start queued work while the device is online and idle; posted work (frees, allocations) does not make it busy."""
        while dev.state == ONLINE and dev.inflight is None:
            work = dev.queue.pop(time.monotonic())
            if work is None:
                return
            if work.cancelled:
                self.settle(work)
                continue
            if work.local is not None:
                self._run_local(dev, work)
                continue
            if work.posted:  # the next item may follow it at once; its answer is matched by seq
                dev.posted[work.msg.seq] = work
                self.send_driver(dev, work.msg, work.bulk)
                continue
            if work.gang is not None:  # a part of a together gang: hold the device until every part is here
                dev.inflight = work
                work.gang.arrive()
                continue
            self.start_work(dev, work)

    def start_work(self, dev: Device, work: Work) -> None:
        """Send a work item to the device's host; the device is busy with it until it answers."""
        dev.inflight = work
        dev.inflight_since = time.monotonic()
        self._trace_work("device.busy", dev, work)
        self.send_driver(dev, work.msg, work.bulk)

    def _run_local(self, dev: Device, work: Work) -> None:
        """Run a kernel-local item (a host-visible copy) now."""
        self._trace_work("device.busy", dev, work)
        try:
            work.local()
        except SysError as exc:
            work.fail(exc.errno, exc.message)
        self.settle(work)
        self._trace_work("device.idle", dev, work)

    def _trace_work(self, event: str, dev: Device, work: Work, **extra) -> None:
        """device.busy / device.idle for one work item: whose, what kind (the kernel's own copies: "copy").

        Always made: the trace ring keeps them for `trace_read` at any log level (one small dict per item).
        """
        kind = "copy" if work.local is not None else work.msg.__struct_config__.tag
        if work.pids:
            extra["pids"] = list(work.pids)
        self.trace(event, device=dev.name, pid=work.owner, work=kind, op=getattr(work.msg, "op", None), **extra)

    def _fail_device_work(self, dev: Device, reason: str) -> None:
        items = ([dev.inflight] if dev.inflight else []) + list(dev.posted.values()) + dev.queue.drain()
        dev.inflight = None
        dev.posted.clear()
        for work in items:
            if not work.cancelled:
                work.fail(Errno.EIO, reason)
            self.settle(work)

    def device_offline(self, dev: Device, reason: str) -> None:
        """The driver host died or hangs: fail its work, lose its tensors, plan a restart."""
        if dev.state == STARTING and dev.kind in self.loading:  # a driver_load that never came up
            self.log.warning("device.load_failed", device=dev.name, reason=reason)
            for ctx in self.loading.pop(dev.kind):
                ctx.fail(Errno.EIO, f"driver {dev.kind} did not come up: {reason}")
            self.unload_driver(dev.kind)
            return
        dev.kill_host()
        self.driver_idents.pop(dev.ident, None)
        self.driver_idents.pop(dev.ident + nodes.BEAT_SUFFIX, None)
        dev.state = OFFLINE
        dev.offline_reason = reason
        self.log.warning("device.offline", device=dev.name, reason=reason, t=time.monotonic())
        self._lose_device(dev, f"device {dev.name} went offline: {reason}")
        dev.schedule_restart(*self.config.restart_backoff_s)
        self._check_ready()

    def _lose_device(self, dev: Device, message: str) -> None:
        """Everything on a device is gone: fail its work and parked calls, mark its tensors lost, remove their files."""
        self._fail_device_work(dev, message)
        for t in self.tensors.on_device(dev.name):
            t.lose(message)
        if dev.hostmem is not None:
            dev.hostmem.close()
            dev.hostmem = None
        runtime.remove(self.shm_of(dev))  # the kernel's files of a host-visible device, with their bytes
        for key in [key for key in self.kv_tensors if key[0] == dev.name]:
            self.kv.remove(*key)
            self.tensors.drop(self.kv_tensors.pop(key))
        sysmodel.lose_models(self, dev, message)
        for w in dev.parked:
            w.payload[0].fail(Errno.EIO, message)
        dev.parked.clear()
        dev.memory = None

    def device(self, name: str, starting: bool = False) -> Device:
        """The online device called `name` (the first of kind `name`, or the plugins' pick for `auto`).

        ENODEV if there is none or it is offline; EAGAIN while its driver host starts (at boot, after a
        restart, or a driver_load), since it has no memory service until the host says hello. With
        `starting`, a starting device is returned too (for calls that only describe it or its queue).
        """
        if name == "auto":
            online = [device_info(d) for d in self.devices.values() if d.state == ONLINE]
            name = self.pm.hook.llmos_pick_device(devices=online) or "auto"
        dev = self.devices.get(name) or self.devices.get(f"{name}0")
        if dev is None or dev.state == ABSENT:
            known = ", ".join(d.name for d in self.devices.values() if d.state != ABSENT) or "none"
            raise SysError(Errno.ENODEV, f"no device {name!r}; devices: {known}")
        if dev.state == OFFLINE:
            raise SysError(Errno.ENODEV, f"device {dev.name} is offline ({dev.offline_reason}); {dev.back_in()}")
        if dev.state == STARTING and not starting:
            since = time.monotonic() - dev.last_heard
            again = f" (restart {dev.restarts}: {dev.offline_reason})" if dev.restarts else ""
            raise SysError(
                Errno.EAGAIN,
                f"device {dev.name} is starting{again}: its driver host was started {since:.1f} s ago"
                + (f"; its last start took {dev.start_s:.1f} s" if dev.start_s else "") + "; retry in a moment",
            )
        return dev

    def _watch_device(self, dev: Device, now: float) -> None:
        if dev.node:
            return nodes.watch(self, dev, now)
        if dev.state == OFFLINE:
            if now >= dev.restart_at:
                dev.restarts += 1
                self.log.info("device.restart", device=dev.name, restarts=dev.restarts, t=now)
                self._start_host(dev)
            return
        if dev.state == ABSENT:
            return
        rc = dev.popen.poll() if dev.popen else None
        if rc is not None:
            return self.device_offline(dev, f"driver host exited with status {rc}")
        if dev.state == STARTING:
            if now - dev.last_heard > START_TIMEOUT_S:
                self.device_offline(dev, f"driver host did not say hello within {START_TIMEOUT_S:.0f} s")
            return
        self.heartbeat(dev, now)

    def heartbeat(self, dev: Device, now: float) -> None:
        """Ping an idle host; declare one hung that leaves a ping or an op unanswered too long."""
        if dev.inflight is not None and dev.inflight.gang is not None and not dev.inflight.gang.started:
            return  # held for its gang, not sent: the host owes no answer yet
        if dev.inflight is not None:
            limit = self.config.hang_s if isinstance(dev.inflight.msg, proto.DPing) else self.config.op_timeout_s
            if now - dev.inflight_since > limit:
                self.device_offline(dev, f"driver host hung: no answer for {limit:.0f} s")
        elif len(dev.queue) == 0 and now - dev.last_heard > self.config.ping_s:
            self.submit(dev, Work(owner=KERNEL_PID, msg=proto.DPing(seq=dev.next_seq()), always=True))
