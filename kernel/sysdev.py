"""Device syscalls: dev_list, dev_info."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.syscalls import messages as m

from .devices import ABSENT, Device

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
        busy_s=dev.busy_s,
        sim_busy_s=dev.sim_busy_s,
    )


def sys_dev_list(k: Kernel, c: CallCtx) -> None:
    """Every device a driver provides, whatever its state."""
    c.reply(m.Devices(devices=[device_info(d) for d in k.devices.values() if d.state != ABSENT]))


def sys_dev_info(k: Kernel, c: CallCtx) -> None:
    """One device, by name or by kind."""
    c.reply(device_info(k.device(c.req.device)))
