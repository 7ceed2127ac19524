"""Rights: the one check before every handler, and the `rights_drop` syscall.

The syscall table says which right each call needs (`Syscall.right`, and
`device_right` for calls that use the devices they name); `check` runs before
the handler and refuses a call without it with EPERM naming the right. The
rules themselves (nesting, dropping, `device:*`) are in syscalls/rights.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.syscalls import Errno
from llmos.syscalls import messages as m
from llmos.syscalls import rights

from .errors import SysError

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .proc import Process
    from llmos.syscalls.table import Syscall


def check(k: Kernel, proc: Process, row: Syscall, req: m.Call) -> None:
    """EPERM naming the right unless `proc` holds what `row` needs for `req`."""
    if row.right and (not row.right_if or getattr(req, row.right_if)):
        need(proc, row.right, row.name)
    if row.device_right and rights.ANY_DEVICE not in proc.rights:
        names = [req.device] if getattr(req, "device", "") else []
        names += getattr(req, "devices", [])
        for name in names:
            need(proc, rights.DEVICE_PREFIX + k.device(name, starting=True).name, row.name)


def need(proc: Process, right: str, what: str) -> None:
    """EPERM unless `proc` holds `right` (what it tried: `what`)."""
    if not rights.holds(proc.rights, right):
        raise SysError(Errno.EPERM, f"process {proc.pid} lacks the right {right!r} that {what} needs")


def sys_rights_drop(k: Kernel, c: CallCtx) -> None:
    """Give up rights for good; answer the rights left."""
    try:
        c.proc.rights = rights.drop(c.proc.rights, c.req.rights, list(k.devices))
    except ValueError as exc:
        raise SysError(Errno.EINVAL, str(exc)) from None
    if c.req.rights:
        k.audit_event("rights_drop", pid=c.proc.pid, dropped=sorted(c.req.rights), rights=sorted(c.proc.rights))
    c.reply(m.Rights(rights=sorted(c.proc.rights)))


def child_rights(parent: Process, asked: list[str] | None) -> frozenset[str]:
    """A spawned child's rights: `asked`, each held by the parent (EPERM naming the first it lacks,
    EINVAL for a name that is no right); the parent's when None."""
    if asked is None:
        return parent.rights
    try:
        return rights.subset(asked, parent.rights)
    except ValueError as exc:
        raise SysError(Errno.EINVAL, str(exc)) from None
    except PermissionError as exc:
        raise SysError(Errno.EPERM, f"process {parent.pid} cannot give its child the right {exc.args[0]!r}, "
                                    "which it does not hold") from None  # fmt: skip
