"""The driver protocol: messages between the kernel and a driver host process.

A driver host connects a DEALER socket to the kernel's ROUTER with a routing
id and a secret the kernel gave it, says Hello, then serves one message at a
time and answers each with Ok or Fail carrying the same `seq`. Tensor bytes
travel as raw frames after the message, as in the syscall ABI. Host-visible
devices (memory the kernel can map, like the CPU's) return a shared-memory
path from `alloc`, and the kernel then reads and writes those tensors itself.
"""

import msgspec

Params = dict[str, int | float | str]


class DeviceSpec(msgspec.Struct, omit_defaults=True, kw_only=True):
    """What a driver says about its device in Hello."""

    description: str
    capacity_bytes: int
    dtypes: list[str]
    ops: list[str]
    host_visible: bool = False
    simulated: bool = False
    peak_flops: float = 0.0
    mem_bw_bytes_s: float = 0.0


class TensorDesc(msgspec.Struct, array_like=True):
    """A tensor as the driver knows it: the kernel's tensor id, shape and dtype."""

    tid: int
    shape: list[int]
    dtype: str


class ToDriver(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of kernel-to-driver messages; `seq` pairs each with its answer."""

    seq: int


class DAlloc(ToDriver, tag="alloc"):
    """Allocate a tensor; a host-visible device answers with its shared-memory path."""

    tensor: TensorDesc


class DFree(ToDriver, tag="free"):
    """Free a tensor."""

    tid: int


class DWrite(ToDriver, tag="write"):
    """Overwrite a tensor with the one bulk frame that follows."""

    tid: int


class DRead(ToDriver, tag="read"):
    """Send a tensor's bytes back as one bulk frame after Ok."""

    tid: int


class DOp(ToDriver, tag="op"):
    """Run one op of the ABI op set into `out`; `new_out`: allocate `out` first."""

    op: str
    inputs: list[TensorDesc]
    out: TensorDesc
    params: Params = {}
    new_out: bool = False


class DCopyBlocks(ToDriver, tag="copy_blocks"):
    """Copy whole blocks inside one tensor seen as [blocks, block_bytes] bytes (KV copy-on-write)."""

    tid: int
    block_bytes: int
    pairs: list[tuple[int, int]]  # (source block, destination block)


class DPing(ToDriver, tag="ping"):
    """Heartbeat: answer Ok at once."""


class FromDriver(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of driver-to-kernel messages."""


class DHello(FromDriver, tag="hello"):
    """First message of a driver host: proves it with the secret, describes its device.

    `count` is how many devices of this kind the machine has; the host of
    index 0 says it, and the kernel starts one host for each other index.
    With count 0 there is no device and no `spec`, and the host exits.
    """

    secret: str
    os_pid: int
    count: int
    spec: DeviceSpec | None = None


class DOk(FromDriver, tag="ok"):
    """Success; `shm` for a host-visible alloc, timings for an op."""

    seq: int
    shm: str = ""
    wall_s: float = 0.0
    sim_s: float = 0.0


class DFail(FromDriver, tag="fail"):
    """Failure with an errno number and a message."""

    seq: int
    errno: int
    message: str


ToDriverUnion = DAlloc | DFree | DWrite | DRead | DOp | DCopyBlocks | DPing
FromDriverUnion = DHello | DOk | DFail

encoder = msgspec.msgpack.Encoder()
to_driver_decoder = msgspec.msgpack.Decoder(ToDriverUnion)
from_driver_decoder = msgspec.msgpack.Decoder(FromDriverUnion)
