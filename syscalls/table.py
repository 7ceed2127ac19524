"""The syscall table: number, name, family, request and reply types, bulk frames.

One row per syscall, in number order. The kernel's dispatch table, the
clients and docs/abi.md are all checked against this tuple.
"""

from dataclasses import dataclass

from . import messages as m
from .numbers import Sys


@dataclass(frozen=True)
class Syscall:
    """One row of the table.

    `bulk_in` / `bulk_out`: how many raw byte frames follow the request / the
    final reply. `streams`: the call may send PARTIAL replies before its FINAL.
    """

    nr: Sys
    family: str
    request: type[m.Call]
    reply: type[m.Reply]
    bulk_in: int = 0
    bulk_out: int = 0
    streams: bool = False
    partial: type[m.Reply] | None = None
    right: str = ""  # the right the call needs (syscalls/rights.py); "" none
    right_if: str = ""  # the request field that, when set, makes `right` needed; "" always
    device_right: bool = False  # it needs the right to use the devices it names (its `device`/`devices` fields)

    @property
    def name(self) -> str:
        """The call's name: its number's name in lower case (`dev_info`)."""
        return self.nr.name.lower()

    @property
    def rights_text(self) -> str:
        """The rights column of docs/abi.md: `spawn`, `models if path, device`, or `-`."""
        parts = [f"{self.right} if {self.right_if}" if self.right_if else self.right] if self.right else []
        return ", ".join(parts + (["device"] if self.device_right else [])) or "-"


TABLE: tuple[Syscall, ...] = (
    Syscall(Sys.NULL, "misc", m.Null, m.Done),
    Syscall(Sys.ATTACH, "process", m.Attach, m.Attached),
    Syscall(Sys.EXIT, "process", m.Exit, m.Done),
    Syscall(Sys.SPAWN, "process", m.Spawn, m.Spawned, right="spawn"),
    Syscall(Sys.WAIT, "process", m.Wait, m.Exited, streams=True, partial=m.Output),
    Syscall(Sys.KILL, "process", m.Kill, m.Done, right="kill"),
    Syscall(Sys.GETPID, "process", m.GetPid, m.PidInfo),
    Syscall(Sys.PS, "process", m.Ps, m.ProcList),
    Syscall(Sys.DEV_LIST, "device", m.DevList, m.Devices),
    Syscall(Sys.DEV_INFO, "device", m.DevInfo, m.DeviceInfo),
    Syscall(Sys.ALLOC, "memory", m.Alloc, m.TensorRef, device_right=True),
    Syscall(Sys.FREE, "memory", m.Free, m.Done),
    Syscall(Sys.WRITE, "memory", m.Write, m.Done, bulk_in=1),
    Syscall(Sys.READ, "memory", m.Read, m.TensorRef, bulk_out=1),
    Syscall(Sys.SHARE, "memory", m.Share, m.Shared, right="share"),
    Syscall(Sys.COMPUTE, "compute", m.Compute, m.TensorRef),
    Syscall(Sys.YIELD, "misc", m.Yield, m.Yielded),
    Syscall(Sys.STAT, "misc", m.Stat, m.KernelStat),
    Syscall(Sys.KV_POOL, "memory", m.KVPool, m.KVPoolInfo, device_right=True),
    Syscall(Sys.KV_ALLOC, "memory", m.KVAlloc, m.KVSeq, device_right=True),
    Syscall(Sys.KV_APPEND, "memory", m.KVAppend, m.KVSeq),
    Syscall(Sys.KV_FORK, "memory", m.KVFork, m.KVSeq),
    Syscall(Sys.KV_FREE, "memory", m.KVFree, m.Done),
    Syscall(Sys.KV_TABLE, "memory", m.KVTable, m.KVSeq),
    Syscall(Sys.MEMSTAT, "memory", m.MemStat, m.MemMap),
    Syscall(Sys.SCHED_GET, "sched", m.SchedGet, m.SchedInfo),
    Syscall(Sys.SCHED_SET, "sched", m.SchedSet, m.SchedInfo, right="sched"),
    Syscall(Sys.DRIVER_LIST, "device", m.DriverList, m.Drivers),
    Syscall(Sys.DRIVER_LOAD, "device", m.DriverLoad, m.Drivers, right="driver"),
    Syscall(Sys.DRIVER_UNLOAD, "device", m.DriverUnload, m.Drivers, right="driver"),
    Syscall(Sys.MODEL_LOAD, "model", m.ModelLoad, m.ModelInfo, right="models", right_if="path", device_right=True),
    Syscall(Sys.MODEL_FREE, "model", m.ModelFree, m.Done),
    Syscall(Sys.GENERATE, "model", m.Generate, m.Completion, streams=True, partial=m.Generated),
    Syscall(Sys.LOGPROBS, "model", m.LogProbs, m.TokenLogProbs),
    Syscall(Sys.MODEL_SAVE, "model", m.ModelSave, m.Done, right="checkpoint"),
    Syscall(Sys.TRAIN_STEP, "model", m.TrainStep, m.TrainResult),
    Syscall(Sys.PROG_LIST, "process", m.ProgList, m.Programs),
    Syscall(Sys.HANDLES, "memory", m.Handles, m.HandleList),
    Syscall(Sys.TOKENIZE, "model", m.Tokenize, m.TokenIds),
    Syscall(Sys.DETOKENIZE, "model", m.Detokenize, m.Text),
    Syscall(Sys.MODEL_QUANTIZE, "model", m.ModelQuantize, m.Compressed),
    Syscall(Sys.MODEL_PRUNE, "model", m.ModelPrune, m.Compressed),
    Syscall(Sys.RIGHTS_DROP, "process", m.RightsDrop, m.Rights),
    Syscall(Sys.TRACE_READ, "misc", m.TraceRead, m.TraceLog),
)

BY_NR: dict[int, Syscall] = {int(s.nr): s for s in TABLE}
BY_REQUEST: dict[type[m.Call], Syscall] = {s.request: s for s in TABLE}

# The members of the tagged union the kernel decodes every request as.
Request: tuple[type[m.Call], ...] = tuple(s.request for s in TABLE)
