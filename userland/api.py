"""The syscall API, written once for both clients.

Each method is a small program: a generator that yields calls as
`(request, bulk_frames, on_partial)` and receives each reply as
`(body, bulk_frames)`. The blocking client runs it to the end and returns the
result; the asyncio client runs it in a coroutine. So `c.alloc(...)` is a
value with `Client` and an awaitable with `AsyncClient`, from one definition.
"""

from collections.abc import Callable, Generator

import torch

from llmos.syscalls import messages as m

from .wire import dtype_name, from_bytes, tensor_bytes

Step = tuple[m.Call, tuple, Callable | None]
Program = Generator[Step, tuple, object]


def one_call(call: m.Call, bulk: tuple = (), on_partial: Callable | None = None) -> Program:
    body, _ = yield call, bulk, on_partial
    return body


class SyscallApi:
    """Every syscall as a method. Subclasses provide `_run(program)`."""

    def _run(self, program: Program):
        raise NotImplementedError

    # ---- misc --------------------------------------------------------------------------

    def null(self):
        """Do nothing, through the kernel: the syscall round trip."""
        return self._run(one_call(m.Null()))

    def yield_(self):
        """Move this process's queued device work behind everyone else's; returns a Yielded."""
        return self._run(one_call(m.Yield()))

    def stat(self):
        """Kernel-wide figures (KernelStat)."""
        return self._run(one_call(m.Stat()))

    # ---- process -----------------------------------------------------------------------

    def getpid(self):
        """This process's pid, parent and name (PidInfo)."""
        return self._run(one_call(m.GetPid()))

    def ps(self):
        """The process table: a list of ProcInfo."""
        return self._run(_field(m.Ps(), "procs"))

    def spawn(self, program: str, args: list[str] | None = None):
        """Start a registered program as a child process (Spawned: pid, os_pid, log)."""
        return self._run(one_call(m.Spawn(program=program, args=list(args or []))))

    def wait(self, pid: int, timeout_s: float | None = None, on_output: Callable[[str], None] | None = None):
        """Wait for a child to end (Exited). `on_output` receives its output as it is written."""
        partial = None if on_output is None else (lambda out: on_output(out.data))
        return self._run(one_call(m.Wait(pid=pid, timeout_s=timeout_s, follow=on_output is not None), (), partial))

    def kill(self, pid: int, signal: int = 15):
        """End this process or one of its children."""
        return self._run(one_call(m.Kill(pid=pid, signal=signal)))

    # ---- device ------------------------------------------------------------------------

    def devices(self):
        """Every device: a list of DeviceInfo."""
        return self._run(_field(m.DevList(), "devices"))

    def device(self, name: str):
        """One device, by name (`cpu0`) or kind (`cpu`)."""
        return self._run(one_call(m.DevInfo(device=name)))

    # ---- memory ------------------------------------------------------------------------

    def alloc(self, device: str, shape: list[int], dtype: str = "float32"):
        """An uninitialised tensor on `device`; returns its TensorRef (`.handle`)."""
        return self._run(one_call(m.Alloc(device=device, shape=list(shape), dtype=dtype)))

    def free(self, handle: int):
        """Close a handle."""
        return self._run(one_call(m.Free(handle=handle)))

    def write(self, handle: int, tensor: torch.Tensor):
        """Overwrite the tensor behind `handle` with `tensor`'s bytes (same size)."""
        return self._run(one_call(m.Write(handle=handle), (tensor_bytes(tensor),)))

    def read(self, handle: int) -> torch.Tensor:
        """The tensor behind `handle`, as a torch tensor on the CPU."""
        return self._run(_read(handle))

    def share(self, handle: int, pid: int) -> int:
        """Give process `pid` a handle to the same tensor; returns that handle's number there."""
        return self._run(_field(m.Share(handle=handle, pid=pid), "handle"))

    def put(self, tensor: torch.Tensor, device: str = "cpu"):
        """Copy a torch tensor to `device`: alloc + write. Returns the TensorRef."""
        return self._run(_put(tensor, device))

    # ---- compute -----------------------------------------------------------------------

    def compute(self, op: str, *inputs: int, out: int | None = None, **params):
        """Run `op` on tensor handles; the result goes to `out` or a new handle (TensorRef)."""
        return self._run(one_call(m.Compute(op=op, inputs=list(inputs), out=out, params=params)))


def _field(call: m.Call, field: str) -> Program:
    body = yield from one_call(call)
    return getattr(body, field)


def _read(handle: int) -> Program:
    ref, bulk = yield m.Read(handle=handle), (), None
    return from_bytes(ref, bulk[0].buffer if hasattr(bulk[0], "buffer") else bulk[0])


def _put(tensor: torch.Tensor, device: str) -> Program:
    ref = yield from one_call(m.Alloc(device=device, shape=list(tensor.shape), dtype=dtype_name(tensor)))
    yield from one_call(m.Write(handle=ref.handle), (tensor_bytes(tensor),))
    return ref
