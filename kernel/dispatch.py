"""The dispatch table: syscall number -> `sys_<name>` handler, one place.

Handlers live in small modules grouped by family (sysproc, sysdev, sysmem,
syskv, syscompute, syssched, sysmisc, sysmodel, syscompress), xv6-style. A handler takes the kernel and the call's
context, checks arguments, and either answers at once (`c.reply`), raises
`errors.SysError` (the dispatcher turns it into an ERROR reply), or hands work to a
device whose callbacks answer later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.syscalls import Errno, Sys
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls.table import TABLE, Syscall

from . import syscompress, syscompute, sysdev, syskv, sysmem, sysmisc, sysmodel, sysproc, sysrights, syssched

AUDITED = (Errno.EPERM, Errno.EBADF)  # the refusals the audit trail records

if TYPE_CHECKING:
    from .kernel import Kernel
    from .proc import Process


class CallCtx:
    """One call in progress: who asked, what, and how to answer."""

    __slots__ = ("kernel", "ident", "rid", "proc", "req", "bulk", "row", "finished")

    def __init__(self, kernel: Kernel, ident: bytes, rid: int, proc: Process | None, req: m.Call, bulk, row: Syscall):
        self.kernel = kernel
        self.ident = ident
        self.rid = rid
        self.proc = proc
        self.req = req
        self.bulk = bulk
        self.row = row
        self.finished = False

    def reply(self, body: m.Reply, bulk: tuple = ()) -> None:
        """Send the FINAL reply (with bulk frames, if the call returns any)."""
        self.finished = True
        if self.kernel.tracing:
            self._exit_event()
        self.kernel.send_reply(self.ident, self.rid, fr.FINAL, body, bulk)

    def _exit_event(self, **extra) -> None:
        self.kernel.trace("syscall.exit", pid=self.proc.pid if self.proc else None, syscall=self.row.name, rid=self.rid, **extra)

    def partial(self, body: m.Reply) -> None:
        """Send one PARTIAL reply of a streaming call."""
        self.kernel.send_reply(self.ident, self.rid, fr.PARTIAL, body)

    def fail(self, errno: Errno, message: str) -> None:
        """Send the ERROR reply that ends the call."""
        self.finished = True
        self.kernel.errors += 1
        if errno in AUDITED and self.kernel.audit is not None:
            self.kernel.audit_refusal(self.proc.pid if self.proc else None, self.row.name, errno, message, self.req)
        if self.kernel.tracing:
            self._exit_event(errno=errno.name)
        self.kernel.send_reply(self.ident, self.rid, fr.ERROR, m.Error(errno=int(errno), message=message))


HANDLERS = {
    Sys.NULL: sysmisc.sys_null,
    Sys.ATTACH: sysproc.sys_attach,
    Sys.EXIT: sysproc.sys_exit,
    Sys.SPAWN: sysproc.sys_spawn,
    Sys.WAIT: sysproc.sys_wait,
    Sys.KILL: sysproc.sys_kill,
    Sys.GETPID: sysproc.sys_getpid,
    Sys.PS: sysproc.sys_ps,
    Sys.DEV_LIST: sysdev.sys_dev_list,
    Sys.DEV_INFO: sysdev.sys_dev_info,
    Sys.ALLOC: sysmem.sys_alloc,
    Sys.FREE: sysmem.sys_free,
    Sys.WRITE: sysmem.sys_write,
    Sys.READ: sysmem.sys_read,
    Sys.SHARE: sysmem.sys_share,
    Sys.COMPUTE: syscompute.sys_compute,
    Sys.YIELD: sysmisc.sys_yield,
    Sys.STAT: sysmisc.sys_stat,
    Sys.KV_POOL: syskv.sys_kv_pool,
    Sys.KV_ALLOC: syskv.sys_kv_alloc,
    Sys.KV_APPEND: syskv.sys_kv_append,
    Sys.KV_FORK: syskv.sys_kv_fork,
    Sys.KV_FREE: syskv.sys_kv_free,
    Sys.KV_TABLE: syskv.sys_kv_table,
    Sys.MEMSTAT: sysmem.sys_memstat,
    Sys.SCHED_GET: syssched.sys_sched_get,
    Sys.SCHED_SET: syssched.sys_sched_set,
    Sys.DRIVER_LIST: sysdev.sys_driver_list,
    Sys.DRIVER_LOAD: sysdev.sys_driver_load,
    Sys.DRIVER_UNLOAD: sysdev.sys_driver_unload,
    Sys.MODEL_LOAD: sysmodel.sys_model_load,
    Sys.MODEL_FREE: sysmodel.sys_model_free,
    Sys.GENERATE: sysmodel.sys_generate,
    Sys.LOGPROBS: sysmodel.sys_logprobs,
    Sys.MODEL_SAVE: sysmodel.sys_model_save,
    Sys.TRAIN_STEP: sysmodel.sys_train_step,
    Sys.PROG_LIST: sysproc.sys_prog_list,
    Sys.HANDLES: sysmem.sys_handles,
    Sys.TOKENIZE: sysmodel.sys_tokenize,
    Sys.DETOKENIZE: sysmodel.sys_detokenize,
    Sys.MODEL_QUANTIZE: syscompress.sys_model_quantize,
    Sys.MODEL_PRUNE: syscompress.sys_model_prune,
    Sys.RIGHTS_DROP: sysrights.sys_rights_drop,
    Sys.TRACE_READ: sysmisc.sys_trace_read,
}

# by request type: the kernel finds a call's row and handler in one lookup
DISPATCH = {row.request: (row, HANDLERS[row.nr]) for row in TABLE}
