"""The driver protocol: messages between the kernel and a driver host process.

A driver host connects a DEALER socket to the kernel's ROUTER with a routing
id and a secret the kernel gave it, says Hello, then serves one message at a
time and answers each with Ok or Fail carrying the same `seq`. Tensor bytes
travel as raw frames after the message, as in the syscall ABI.

Host-visible devices (memory the kernel can map, like the CPU's) never see
alloc, free, write or read: the kernel places those tensors in shared-memory
files itself (`kernel/hostmem.py`), moves their bytes itself, and names
each tensor's file and offset in every message that uses it
(`TensorDesc.shm`); the driver maps them. `forget` tells it a file is gone.
"""

import msgspec

Params = dict[str, int | float | str]

OPTIMIZER_COPIES = 3
"""Training memory per weight byte, which the kernel and a driver that keeps its own ledger both charge from a
model's first training step: its gradient and AdamW's two moment estimates."""


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
    """A tensor as the driver knows it: the kernel's tensor id, shape and dtype.

    On a host-visible device, `shm` is the shared-memory file the kernel put
    the tensor's bytes in and `offset` where in it they start ("" for a
    tensor of no bytes, and on other devices).
    """

    tid: int
    shape: list[int]
    dtype: str
    shm: str = ""
    offset: int = 0


class ToDriver(msgspec.Struct, tag_field="t", kw_only=True):
    """Base of kernel-to-driver messages; `seq` pairs each with its answer."""

    seq: int


class DAlloc(ToDriver, tag="alloc"):
    """Allocate a tensor (devices that are not host-visible)."""

    tensor: TensorDesc


class DFree(ToDriver, tag="free"):
    """Free a tensor (devices that are not host-visible)."""

    tid: int


class DWrite(ToDriver, tag="write"):
    """Overwrite a tensor with the one bulk frame that follows (from byte `offset` on, when set)."""

    tid: int
    offset: int | None = None


class DRead(ToDriver, tag="read"):
    """Send a tensor's bytes (or `length` of them from byte `offset` on, when set) back as one bulk frame after Ok."""

    tid: int
    offset: int | None = None
    length: int | None = None


class DOp(ToDriver, tag="op"):
    """Run one op of the ABI op set into `out`; `new_out`: allocate `out` first (never on a host-visible
    device, whose `out` the kernel has placed)."""

    op: str
    inputs: list[TensorDesc]
    out: TensorDesc
    params: Params = {}
    new_out: bool = False


class DCopyBlocks(ToDriver, tag="copy_blocks"):
    """Copy whole blocks inside one tensor seen as [blocks, block_bytes] bytes (KV copy-on-write)."""

    tensor: TensorDesc
    block_bytes: int
    pairs: list[tuple[int, int]]  # (source block, destination block)


class DModelLoad(ToDriver, tag="model_load"):
    """Build model `model` of `arch` ("module:function" `target` gives its Architecture) with a PagedKV.

    With `checkpoint` (an absolute path), weights and config come from it and
    `config` may only repeat the checkpoint's; with `folder` (an absolute
    path), from a Hugging Face-format folder, the architecture from its
    config.json. Ok is followed by one frame: the encoded `ModelDesc`.
    """

    model: int
    arch: str
    target: str
    kv_blocks: int
    block_size: int
    config: dict = {}
    dtype: str = "float32"
    checkpoint: str = ""
    seed: int = 0  # a fresh model's initial weights come from this seed
    folder: str = ""
    swap_blocks: int = 0  # blocks of host memory the KV blocks of preempted sequences are swapped to
    key: bytes = b""  # the kernel's storage key: `checkpoint` may be sealed (drivers/models/sealed.py)


class ModelDesc(msgspec.Struct, kw_only=True):
    """A loaded model as the driver sees it: full config, parameter count, bytes of weights and KV."""

    config: dict
    params: int
    param_bytes: int
    kv_bytes: int
    step: int = 0  # optimizer steps taken (from the checkpoint)
    compression: str = ""  # what compressed its weights (a checkpoint of a quantized or pruned model), or ""
    sha256: str = ""  # of the checkpoint file it was read from, or of the folder (its manifest digest), or ""


class DModelFree(ToDriver, tag="model_free"):
    """Drop a model and its KV storage."""

    model: int


class SeqStep(msgspec.Struct, kw_only=True):
    """One sequence of a generation step: new tokens from `position`, its block table, how to sample."""

    tokens: list[int]
    position: int
    table: list[int]
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0


class BlockMove(msgspec.Struct, kw_only=True):
    """KV blocks moved between the device pool and the host (swap) pool of a model: (from, to) pairs."""

    out: bool  # True: device block -> host block (swap out); False: host block -> device block (swap in)
    pairs: list[tuple[int, int]]


class DModelStep(ToDriver, tag="model_step"):
    """`steps` paged-KV steps over a batch; Ok is followed by one frame, the encoded list of sampled token ids.

    First the `moves` are done, in order: the kernel's books already show
    them, and a block one move frees may be the destination of the next or be
    written by the step. The first step feeds each sequence's `tokens`; each
    later one feeds the token the sequence drew in the step before, at the
    next position (every table must already hold a block for every position
    reached). The ids come step by step: `steps` rows of one id per sequence.
    The draw of a sampled token depends only on its sequence's seed and position.
    """

    model: int
    seqs: list[SeqStep]
    steps: int = 1
    moves: list[BlockMove] = []


class DLogProbs(ToDriver, tag="logprobs"):
    """Log-probabilities of `tokens`; Ok is followed by one frame, the encoded list of floats, one per token after the first."""

    model: int
    tokens: list[int]


class DModelSave(ToDriver, tag="model_save"):
    """Write the model at `path` (absolute): `format` "llmos", one safetensors checkpoint (with its optimizer
    state and step, once trained); "hf", a Hugging Face-format folder, with the tokenizer files of `source`
    (the folder the model came from, or ""). Ok may be followed by one frame, the encoded SHA-256 (hex) of
    the checkpoint file written."""

    model: int
    path: str
    format: str = "llmos"
    source: str = ""
    key: bytes = b""  # seal the checkpoint under this key (drivers/models/sealed.py); b"": plain


class DTrainStep(ToDriver, tag="train_step"):
    """One AdamW step on a batch of token windows; Ok is followed by one frame, the encoded `TrainOut`.

    The driver makes the model's optimizer on the first step (from the
    checkpoint's optimizer state when the model was loaded from one) and keeps
    it with the model. `grouped`: one replica's part of a data-parallel step
    (docs/distributed.md): `tokens` is its shard (maybe empty) of a batch of
    `total` windows, and the gradients are summed over the model's process
    group before the step.
    """

    model: int
    tokens: list[list[int]]
    lr: float
    weight_decay: float
    clip: float
    total: int = 0
    grouped: bool = False


class TrainOut(msgspec.Struct, kw_only=True):
    """What a training step reports: the loss before it, the gradient norm, the step count after it.

    A grouped step's loss and norm are the whole batch's; `digest` is a hash of the weights after the
    step (replicas that agree hold bit-identical weights), "" for a step alone.
    """

    loss: float
    grad_norm: float
    step: int
    digest: str = ""


class DGroupOpen(ToDriver, tag="group_open"):
    """Rank 0 of model `model`'s process group: open the group's rendezvous store on a free port of `host`
    (this host's own address); Ok is followed by one frame, the encoded `GroupStore`. Answers at once."""

    model: int
    host: str
    timeout_s: float


class GroupStore(msgspec.Struct, kw_only=True):
    """Where a group's rendezvous store listens: the port `group_open` picked."""

    port: int


class DGroupJoin(ToDriver, tag="group_join"):
    """Join model `model`'s process group as `rank` of `world` (`backend` gloo, or nccl when every replica
    is a CUDA device), through the store at `store` ("HOST:PORT"), its own connections listening on `host`,
    under the store keys `prefix` (one per group the model ever had). Blocks until every rank has joined; EIO
    after `timeout_s`, which also bounds every all-reduce of the group. Replaces the model's earlier group."""

    model: int
    rank: int
    world: int
    store: str
    host: str
    prefix: str
    timeout_s: float
    backend: str = "gloo"


class DModelQuantize(ToDriver, tag="model_quantize"):
    """Quantize the model's linear layers (`scheme` "int8" or "int4" in groups of `group_size`), measuring it
    on `windows` before and after; Ok is followed by one frame, the encoded `CompressOut`."""

    model: int
    scheme: str
    group_size: int
    windows: list[list[int]] = []


class DModelPrune(ToDriver, tag="model_prune"):
    """Prune the model's linear layers to `sparsity` by magnitude (`pattern` "unstructured" or "2:4"), measuring
    it on `windows` before and after; Ok is followed by one frame, the encoded `CompressOut`."""

    model: int
    sparsity: float
    pattern: str
    windows: list[list[int]] = []


class CompressOut(msgspec.Struct, kw_only=True):
    """A model before and after a quantize or prune: weight bytes held, perplexity over the windows (0.0 with
    none), greedy decode tokens/s, the measured zero fraction of the changed matrices, what they became."""

    compression: str
    layers: int
    sparsity: float
    bytes_before: int
    bytes_after: int
    perplexity_before: float
    perplexity_after: float
    tok_s_before: float
    tok_s_after: float


class DPing(ToDriver, tag="ping"):
    """Heartbeat: answer Ok at once."""


class DForget(ToDriver, tag="forget"):
    """Host-visible devices: the kernel removed the shared-memory file `path`; drop any mapping of it.

    Sent after every message that named a tensor in it, once no tensor lives there."""

    path: str


NODE_BEAT_S = 1.0
"""How often a remote driver host beats; the kernel takes a node that missed `KernelConfig.node_beats` for dead."""


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
    node: str = ""  # a remote driver host (`llmos host`): its node's name; it joins with its key, not a secret
    kind: str = ""  # ... and its device's driver kind and index (the kernel names it NODE/KINDINDEX)
    index: int = 0
    kernel: str = ""  # ... and the address it reached the kernel at: where its node reaches the kernel's machine


class DBeat(FromDriver, tag="beat"):
    """A remote driver host's heartbeat, sent every `NODE_BEAT_S` from a socket of its own, busy or not."""


class DOk(FromDriver, tag="ok"):
    """Success; timings for an op."""

    seq: int
    wall_s: float = 0.0
    sim_s: float = 0.0


class DFail(FromDriver, tag="fail"):
    """Failure with an errno number and a message."""

    seq: int
    errno: int
    message: str


ToDriverUnion = (
    DAlloc | DFree | DWrite | DRead | DOp | DCopyBlocks | DPing | DForget
    | DModelLoad | DModelFree | DModelStep | DLogProbs | DModelSave | DTrainStep | DGroupOpen | DGroupJoin
    | DModelQuantize | DModelPrune
)
FromDriverUnion = DHello | DBeat | DOk | DFail

encoder = msgspec.msgpack.Encoder()
to_driver_decoder = msgspec.msgpack.Decoder(ToDriverUnion)
from_driver_decoder = msgspec.msgpack.Decoder(FromDriverUnion)
