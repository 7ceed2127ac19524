"""Device syscalls: dev_list, dev_info, driver_list, driver_load, driver_unload."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.syscalls import Errno
from llmos.syscalls import messages as m

from . import plugins
from .devices import ABSENT, Device
from .errors import SysError

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel


def device_info(dev: Device) -> m.DeviceInfo:
    """Describe one device as the ABI does."""
    spec = dev.spec
    return m.DeviceInfo(
        name=dev.name,
        kind=dev.kind,
        state=dev.state,
        description=spec.description if spec else dev.entry.help,
        capacity_bytes=dev.memory.capacity if dev.memory is not None else 0,
        used_bytes=dev.memory.used if dev.memory is not None else 0,
        dtypes=list(spec.dtypes) if spec else [],
        ops=list(spec.ops) if spec else [],
        host_visible=spec.host_visible if spec else False,
        driver_os_pid=dev.os_pid,
        restarts=dev.restarts,
        queued=len(dev.queue),
        simulated=spec.simulated if spec else False,
        peak_flops=spec.peak_flops if spec else 0.0,
        busy_s=dev.busy_s,
        sim_busy_s=dev.sim_busy_s,
        node=dev.node,
        address=dev.address,
        rtt_ms=dev.rtt_s * 1e3,
    )


def sys_dev_list(k: Kernel, c: CallCtx) -> None:
    """Every device a driver provides, whatever its state."""
    c.reply(m.Devices(devices=[device_info(d) for d in k.devices.values() if d.state != ABSENT]))


def sys_dev_info(k: Kernel, c: CallCtx) -> None:
    """One device, by name or by kind."""
    c.reply(device_info(k.device(c.req.device, starting=True)))


def driver_list(k: Kernel) -> m.Drivers:
    """Every driver kind and the devices it runs."""
    rows = []
    for kind, entry in sorted(k.drivers.items()):
        devices = [d.name for d in k.devices.values() if d.kind == kind]
        rows.append(m.DriverInfo(kind=kind, target=entry.target, help=entry.help, loaded=bool(devices), devices=devices))
    return m.Drivers(drivers=rows)


def sys_driver_list(k: Kernel, c: CallCtx) -> None:
    """The drivers the plugins provide, loaded or not."""
    k.drivers = plugins.drivers(k.pm)
    c.reply(driver_list(k))


def sys_driver_load(k: Kernel, c: CallCtx) -> None:
    """Start a driver's devices; answer once they are online (or absent)."""
    plugins.load_entry_points(k.pm)  # packages installed since boot
    k.drivers = plugins.drivers(k.pm)
    if any(d.kind == c.req.kind for d in k.devices.values()):
        raise SysError(Errno.EINVAL, f"driver {c.req.kind} is already loaded")
    try:
        k.load_driver(c.req.kind)
    except ValueError as exc:
        raise SysError(Errno.EINVAL, str(exc)) from None
    k.audit_event("driver_load", pid=c.proc.pid, kind=c.req.kind)
    k.loading.setdefault(c.req.kind, []).append(c)


def sys_driver_unload(k: Kernel, c: CallCtx) -> None:
    """Stop a driver's devices; work on them fails with EIO, handles on them are lost."""
    if not k.unload_driver(c.req.kind):
        raise SysError(Errno.EINVAL, f"driver {c.req.kind} is not loaded")
    k.audit_event("driver_unload", pid=c.proc.pid, kind=c.req.kind)
    c.reply(driver_list(k))
