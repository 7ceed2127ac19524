"""In-process conformance checks: a driver instance, driven the way its host and the kernel drive it.

Each `check_*` function takes a `Harness` (a driver plus the kernel's side of
the bargain: fresh tensor ids; for a host-visible device, tensors placed in
shared-memory files and their bytes moved through the kit's own mapping, as
the kernel does (`placement.py`); otherwise `alloc`, `free`, `write` and
`read`) and raises AssertionError saying what is wrong. They are plain
functions so a driver author can call one from a debugger;
`DriverConformance` runs them all.
"""

import itertools
import os
from collections.abc import Callable

import msgspec
import torch

from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.dtypes import FLOATING, ITEMSIZE, nbytes
from llmos.syscalls.ops import OPS

from ..base import Driver, DriverError
from .cases import INPUT_SHAPES, Case, compare, make_case, op_cases, runnable_cases, sample
from .placement import SharedFiles

MAX_SMALL_CAPACITY = 1 << 30  # capacity_options must make the device at most this big, so the kit can fill it


def expect(condition: bool, message: str) -> None:
    """Fail the check with `message` unless `condition` holds (works under python -O, unlike assert)."""
    if not condition:
        raise AssertionError(message)


def expect_error(errno: Errno, what: str, call: Callable[[], object]) -> None:
    """`call()` must raise DriverError with `errno`."""
    try:
        call()
    except DriverError as exc:
        got = Errno(exc.errno).name
        expect(exc.errno == errno, f"{what}: DriverError {got} ({exc.message}), expected {errno.name}")
    else:
        raise AssertionError(f"{what}: no error, expected DriverError({errno.name})")


def to_bytes(x: torch.Tensor) -> bytes:
    """A tensor's bytes as the ABI lays them out: row-major, no header."""
    return x.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b""


def from_bytes(data: bytes, shape: list[int], dtype: str) -> torch.Tensor:
    """The tensor whose ABI bytes are `data`."""
    if not data:
        return torch.empty(shape, dtype=getattr(torch, dtype))
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(getattr(torch, dtype)).reshape(shape)


class Harness:
    """A driver with the kernel's side: tensor ids, and tensors placed and moved the way the kernel does.

    A host-visible device's tensors live in the kit's shared-memory files in
    `options["shm_dir"]` (`files`); the driver never sees alloc, free, write or
    read for them, and is told to `forget` a file once no tensor is left in it.
    """

    def __init__(self, driver: Driver):
        self.driver = driver
        self.spec = driver.spec()
        self.tids = itertools.count(1)
        self.files = SharedFiles(driver.options["shm_dir"]) if self.spec.host_visible else None

    def empty(self, shape: list[int], dtype: str) -> TensorDesc:
        """A new tensor with a fresh id: placed by the kit if the device is host-visible, else allocated."""
        desc = TensorDesc(next(self.tids), list(shape), dtype)
        size = nbytes(desc.shape, dtype)
        if self.files is not None:
            return TensorDesc(desc.tid, desc.shape, dtype, *self.files.place(size)) if size else desc
        answer = self.driver.alloc(desc)
        expect(answer is None, f"alloc returned {answer!r}; it returns None")
        return desc

    def put(self, x: torch.Tensor) -> TensorDesc:
        """A new tensor holding `x`."""
        desc = self.empty(list(x.shape), str(x.dtype).removeprefix("torch."))
        self.write(desc, x)
        return desc

    def write(self, desc: TensorDesc, x: torch.Tensor) -> None:
        """Overwrite a tensor: into its shared file on a host-visible device, else through `write`."""
        data = to_bytes(x)
        if self.files is None:
            self.driver.write(desc.tid, memoryview(data))
        elif data:
            self.files.write(desc.shm, desc.offset, data)

    def get(self, desc: TensorDesc) -> torch.Tensor:
        """A tensor's contents: from its shared file on a host-visible device, else through `read`."""
        size = nbytes(desc.shape, desc.dtype)
        if self.files is None:
            data = bytes(self.driver.read(desc.tid))
        else:
            data = self.files.read(desc.shm, desc.offset, size) if size else b""
        expect(len(data) == size, f"tensor {desc.tid} ({desc.dtype} {desc.shape}): {len(data)} bytes, not {size}")
        return from_bytes(data, desc.shape, desc.dtype)

    def free(self, *descs: TensorDesc) -> None:
        """Free tensors; on a host-visible device, forget their places and have the driver forget emptied files."""
        for desc in descs:
            if self.files is None:
                self.driver.free(desc.tid)
            elif desc.shm and self.files.give(desc.shm):
                self.driver.forget(desc.shm)

    def close(self) -> None:
        """Close the driver and remove the files left."""
        self.driver.close()
        if self.files is not None:
            self.files.close()

    def run(self, case: Case, out: TensorDesc | None = None) -> tuple[TensorDesc, float]:
        """Run `case` on fresh input tensors into `out` (default: a fresh tensor); the inputs are freed."""
        inputs = [self.put(x) for x in case.inputs]
        out = out or self.empty(case.out_shape, case.dtype)
        try:
            return out, self.driver.run_op(case.op, inputs, out, case.params)
        finally:
            self.free(*inputs)

    def a_floating_dtype(self) -> str | None:
        """A floating dtype the device supports (float32 if it can), or None."""
        floats = [d for d in self.spec.dtypes if d in FLOATING]
        return "float32" if "float32" in floats else (floats[0] if floats else None)


def check_spec(driver_class: type[Driver], options: dict, spec: DeviceSpec) -> None:
    """The Hello the host would send is well formed and describes a usable device."""
    expect(bool(driver_class.kind) and driver_class.kind.isidentifier(), f"kind {driver_class.kind!r} is not a name")
    count = driver_class.count(options)
    expect(isinstance(count, int) and count >= 1, f"count() is {count!r}; a machine with the device has at least 1")
    hello = proto.DHello(secret="s", os_pid=1, count=count, spec=spec)
    try:
        echoed = proto.from_driver_decoder.decode(proto.encoder.encode(hello)).spec
    except (TypeError, msgspec.ValidationError) as exc:
        raise AssertionError(f"the spec does not survive the wire: {exc}") from exc
    expect(echoed == spec, f"the spec changes on the wire: {spec} became {echoed}")
    expect(bool(spec.description.strip()), "the spec has no description")
    expect(spec.capacity_bytes > 0, f"capacity_bytes is {spec.capacity_bytes}")
    expect(bool(spec.dtypes) and set(spec.dtypes) <= set(ITEMSIZE), f"dtypes {spec.dtypes} must be ABI dtypes")
    expect(len(set(spec.dtypes)) == len(spec.dtypes), f"dtypes {spec.dtypes} repeat")
    expect(bool(spec.ops) and set(spec.ops) <= set(OPS), f"ops {spec.ops} must be ops of the op set {sorted(OPS)}")
    expect(spec.peak_flops >= 0 and spec.mem_bw_bytes_s >= 0, "peak figures must not be negative")
    if spec.simulated:
        expect(spec.peak_flops > 0 and spec.mem_bw_bytes_s > 0,
               "a simulated device must give its peak_flops and mem_bw_bytes_s")
    expect(bool(runnable_cases(spec.ops, spec.dtypes)), f"none of the ops {spec.ops} runs on the dtypes {spec.dtypes}")


def check_round_trip(h: Harness) -> None:
    """Bytes written to a tensor of every dtype (plain, scalar, empty) read back unchanged, also
    when other tensors live beside it.

    On a host-visible device the kit moves those bytes itself, as the kernel
    does; `check_shared_files` holds the driver to what it finds there.
    """
    for dtype in h.spec.dtypes:
        for shape in ([3, 5], [], [0, 4]):
            x = sample(shape, dtype, torch.Generator().manual_seed(len(shape)))
            desc = h.put(x)
            got = h.get(desc)
            expect(to_bytes(got) == to_bytes(x), f"{dtype} {shape}: read back {got.tolist()}, wrote {x.tolist()}")
            h.free(desc)
    # tensors alive together keep their own bytes (a driver may cut them from one block or file)
    dtype = h.spec.dtypes[0]
    xs = [sample([n, 3], dtype, torch.Generator().manual_seed(n)) for n in (1, 5, 40, 1, 5, 40)]
    descs = [h.put(x) for x in xs]
    for x, desc in zip(xs, descs):
        expect(to_bytes(h.get(desc)) == to_bytes(x), f"tensor {desc.tid} lost its bytes to a neighbour")
    h.free(*descs)


def check_pieces(h: Harness) -> None:
    """A tensor written and read in pieces (`write_at`, `read_at`: tensors over the kernel's bulk limit).

    A driver may refuse pieces with EINVAL (its tensors are then limited to one
    frame); a host-visible one is never asked (the kernel maps its tensors).
    """
    if h.spec.host_visible:
        return
    dtype = h.spec.dtypes[0]
    x = sample([7, 9], dtype, torch.Generator().manual_seed(3))
    data = to_bytes(x)
    desc = h.empty([7, 9], dtype)
    cuts = [0, 5, len(data) // 2, len(data)]
    try:
        for start, end in zip(cuts, cuts[1:]):
            h.driver.write_at(desc.tid, start, memoryview(data[start:end]))
    except DriverError as exc:
        expect(exc.errno == Errno.EINVAL, f"write_at failed with {Errno(exc.errno).name}; refuse pieces with EINVAL")
        return h.free(desc)
    expect(to_bytes(h.get(desc)) == data, f"{dtype}: the pieces written read back as {h.get(desc).tolist()}")
    got = b"".join(bytes(h.driver.read_at(desc.tid, start, end - start)) for start, end in zip(cuts, cuts[1:]))
    expect(got == data, f"{dtype}: read_at's pieces do not add up to the tensor's bytes")
    h.free(desc)


def mapped(path: str) -> bool:
    """Whether this process maps the file `path` (from /proc/self/maps; False where there is none)."""
    try:
        with open("/proc/self/maps") as f:
            names = {parts[5].rstrip("\n") for line in f if len(parts := line.split(maxsplit=5)) == 6}
    except FileNotFoundError:
        return False
    return path in names or f"{path} (deleted)" in names


def check_shared_files(h: Harness, computes_in: dict[str, str]) -> None:
    """Host-visible: tensors the kernel put side by side in one shared file, none at offset 0, compute
    right; bytes written into the file after the driver mapped it count; `copy_blocks` finds its tensor
    the same way; and `forget` of a file unmaps it and leaves the others working.

    Devices that allocate are not asked: their tensors are their own.
    """
    if not h.spec.host_visible:
        return
    case = runnable_cases(h.spec.ops, h.spec.dtypes)[0]
    h.files.start_file()
    inputs = [h.put(x) for x in case.inputs]
    out = h.empty(case.out_shape, case.dtype)
    expect(len({d.shm for d in inputs + [out]}) == 1 and 0 not in {d.offset for d in inputs + [out]},
           "the kit did not put the tensors side by side in one file")  # a kit bug, not the driver's
    h.driver.run_op(case.op, inputs, out, case.params)
    failure = compare(case, h.get(out), computes_in)
    expect(not failure, f"on tensors at offsets {[d.offset for d in inputs]} -> {out.offset} of one file: {failure}")

    again = make_case(case.op, case.dtype, [list(x.shape) for x in case.inputs], seed=1)
    for desc, x in zip(inputs, again.inputs):
        h.write(desc, x)
    h.driver.run_op(case.op, inputs, out, case.params)
    failure = compare(again, h.get(out), computes_in)
    expect(not failure, f"with new bytes written into the file after the driver mapped it: {failure}")

    dtype = h.spec.dtypes[0]
    h.files.start_file()
    blocks = sample([4, 8], dtype, torch.Generator().manual_seed(2))
    other = h.put(blocks)
    h.driver.copy_blocks(other, 8 * ITEMSIZE[dtype], [(0, 2), (3, 1)])
    want = blocks.clone()
    want[[2, 1]] = blocks[[0, 3]]
    expect(to_bytes(h.get(other)) == to_bytes(want), f"copy_blocks at offset {other.offset} of a file: "
           f"{h.get(other).tolist()}, expected {want.tolist()}")
    h.free(other)  # its file goes: the driver is told to forget it
    expect(not mapped(other.shm), f"after forget({other.shm!r}) the driver still maps the removed file")
    h.driver.forget(os.path.join(h.files.folder, "never-made"))  # a file the driver never mapped: nothing to drop
    h.driver.run_op(case.op, inputs, out, case.params)
    failure = compare(again, h.get(out), computes_in)
    expect(not failure, f"after forget of another file: {failure}")
    h.free(*inputs, out)


def case_failure(h: Harness, case: Case, computes_in: dict[str, str]) -> str:
    """Why the device gets `case` wrong ("" if right): a wrong result, or not failing where torch fails."""
    want_failure = case.reference() is None
    try:
        out, seconds = h.run(case)
    except DriverError as exc:
        if want_failure and exc.errno == Errno.EINVAL:
            return ""
        return f"{case}: DriverError {Errno(exc.errno).name}: {exc.message}"
    try:
        if want_failure:
            return f"{case}: torch refuses this op, so the driver must fail with EINVAL; it succeeded"
        if not isinstance(seconds, float) or seconds < 0:
            return f"{case}: run_op returned {seconds!r}; it must return the simulated seconds (0.0 on a real device)"
        return compare(case, h.get(out), computes_in)
    finally:
        h.free(out)


def check_ops(h: Harness, computes_in: dict[str, str]) -> None:
    """Every op the device declares, in every dtype it declares, agrees with torch."""
    failures = [msg for case in op_cases(h.spec.ops, h.spec.dtypes) if (msg := case_failure(h, case, computes_in))]
    expect(not failures, f"{len(failures)} op results differ from torch:\n  " + "\n  ".join(failures))


def check_out_aliases_input(h: Harness, computes_in: dict[str, str]) -> None:
    """An op may write into one of its own inputs (the kernel allows `out` to be an input)."""
    op = next((op for op in ("add", "mul", "sub") if op in h.spec.ops), None)
    if op is None:
        return
    case = make_case(op, h.a_floating_dtype() or h.spec.dtypes[0], [[4, 8], [4, 8]])
    a, b = (h.put(x) for x in case.inputs)
    h.driver.run_op(op, [a, b], a, case.params)
    failure = compare(case, h.get(a), computes_in)
    h.free(a, b)
    expect(not failure, f"with out = the first input: {failure}")


def check_freed_tensor_is_gone(h: Harness) -> None:
    """A freed tensor cannot be read, written, computed with or freed again: EINVAL.

    Devices that allocate only: a host-visible device frees nothing (its tensors are the kernel's).
    """
    if h.spec.host_visible:
        return
    dtype = h.spec.dtypes[0]
    x = sample([4], dtype, torch.Generator().manual_seed(0))
    gone = h.put(x)
    h.free(gone)
    expect_error(Errno.EINVAL, "read of a freed tensor", lambda: h.driver.read(gone.tid))
    expect_error(Errno.EINVAL, "write of a freed tensor", lambda: h.driver.write(gone.tid, memoryview(to_bytes(x))))
    expect_error(Errno.EINVAL, "free of a freed tensor", lambda: h.driver.free(gone.tid))
    case = runnable_cases(h.spec.ops, h.spec.dtypes)[0]
    inputs = [h.put(x) for x in case.inputs]
    out = h.empty(case.out_shape, case.dtype)
    h.free(inputs[0])
    expect_error(Errno.EINVAL, f"{case.op} on a freed input",
                 lambda: h.driver.run_op(case.op, inputs, out, case.params))
    h.free(*inputs[1:], out)


def check_bad_requests(h: Harness) -> None:
    """Requests the device cannot serve fail with DriverError(EINVAL), and the device goes on working.

    Allocations of an id in use or of an undeclared dtype are checked on devices that allocate only
    (not host-visible ones).
    """
    dtype = h.spec.dtypes[0]
    x = h.put(sample([4], dtype, torch.Generator().manual_seed(0)))
    expect_error(Errno.EINVAL, "an unknown op", lambda: h.driver.run_op("no_such_op", [x], x, {}))
    allocates = not h.spec.host_visible
    if allocates:
        expect_error(Errno.EINVAL, "alloc of a tensor id in use",
                     lambda: h.driver.alloc(TensorDesc(x.tid, [4], dtype)))
    floating = h.a_floating_dtype()
    for op in sorted(set(OPS) - set(h.spec.ops)):
        if OPS[op].floating_only and floating is None:
            continue
        case = make_case(op, floating if OPS[op].floating_only else dtype)
        expect_error(Errno.EINVAL, f"{op}, which the device does not declare", lambda: h.run(case))
    undeclared = sorted(set(ITEMSIZE) - set(h.spec.dtypes)) if allocates else []
    for missing in undeclared:
        expect_error(Errno.EINVAL, f"alloc of {missing}, which the device does not declare",
                     lambda: h.driver.alloc(TensorDesc(next(h.tids), [4], missing)))
    misfit = next(((op, d) for op, d in (("matmul", floating), ("add", dtype)) if op in h.spec.ops and d), None)
    if misfit:  # shapes the kernel would refuse; the driver must not crash on them either
        op, d = misfit
        a, b, out = h.empty([3, 4], d), h.empty([5, 6], d), h.empty([3, 6], d)
        expect_error(Errno.EINVAL, f"{op} of shapes that do not fit", lambda: h.driver.run_op(op, [a, b], out, {}))
        h.free(a, b, out)
    h.free(x)
    again = h.put(sample([2, 3], dtype, torch.Generator().manual_seed(1)))
    expect(h.get(again).shape == (2, 3), "the device stopped working after bad requests")
    h.free(again)


def check_capacity(h: Harness) -> None:
    """The driver refuses allocations past its capacity with ENOMEM, and frees make room again.

    Devices that allocate only: for a host-visible device the kernel's memory service enforces the capacity.
    """
    if h.spec.host_visible:
        return
    cap = h.spec.capacity_bytes
    expect(cap <= MAX_SMALL_CAPACITY, f"capacity_options left the capacity at {cap} bytes; make it at most "
           f"{MAX_SMALL_CAPACITY} so the kit can fill the device")
    dtype = min(h.spec.dtypes, key=lambda d: (ITEMSIZE[d], d))
    n = cap * 2 // 5 // ITEMSIZE[dtype]
    first, second = h.empty([n], dtype), h.empty([n], dtype)
    third = TensorDesc(next(h.tids), [n], dtype)
    expect_error(Errno.ENOMEM, "another 40% of the capacity when 80% is taken", lambda: h.driver.alloc(third))
    too_big = TensorDesc(next(h.tids), [cap // ITEMSIZE[dtype] + 1], dtype)
    h.free(first, second)
    expect_error(Errno.ENOMEM, "more than the whole capacity", lambda: h.driver.alloc(too_big))
    first = h.empty([n], dtype)
    h.driver.alloc(third)  # the same id as the refused alloc: that left nothing behind
    h.free(first, third)


def scaled(shapes: list[list[int]], factor: int) -> list[list[int]]:
    """The shapes with every dimension but the broadcast ones (1) multiplied by `factor`."""
    return [[d if d == 1 else d * factor for d in s] for s in shapes]


def check_reported_time(h: Harness) -> None:
    """run_op's seconds: 0.0 on a real device; on a simulated one positive, and more for a bigger op."""
    base = runnable_cases(h.spec.ops, h.spec.dtypes)[0]
    op = base.op
    seconds = []
    for factor in (1, 4):
        out, s = h.run(make_case(op, base.dtype, scaled(INPUT_SHAPES[op], factor)))
        h.free(out)
        seconds.append(s)
    small, big = seconds
    if h.spec.simulated:
        expect(0 < small < big, f"simulated seconds of {op}: {small!r} for a small op, {big!r} for one 4x wider")
    else:
        expect(small == big == 0.0, f"a real device returns 0.0 from run_op, not {seconds}")
