"""Every request and reply of the syscall ABI, as msgspec Structs.

Requests are one tagged union: the tag field `nr` holds the syscall number
from `numbers.Sys`. Requests reject unknown fields (the kernel never ignores
what a caller asked for); replies accept them (a client keeps working when a
newer kernel adds a reply field). Defaults are omitted on the wire.
"""

import msgspec

from .numbers import Sys

Params = dict[str, int | float | str]
TraceValue = bool | int | float | str | list[int] | None
"""What a timeline event's field may hold (trace_read): a name, a count, a time, a flag, pids."""


class Call(msgspec.Struct, tag_field="nr", forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Base of every request; subclasses are tagged with their syscall number."""


class Reply(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Base of every reply body."""


# ---- replies shared by several calls -------------------------------------------------


class Done(Reply):
    """The call succeeded and has nothing to return."""


class Error(Reply):
    """A failed call: an errno number and a message a person can act on."""

    errno: int
    message: str


class TensorRef(Reply):
    """A tensor in the caller's handle table.

    After `compute`: `wall_s` is how long the op ran in the driver, and
    `sim_s` the device time a simulated device's cost model gives it (0 on
    real devices).
    """

    handle: int
    device: str
    shape: list[int]
    dtype: str
    nbytes: int
    wall_s: float = 0.0
    sim_s: float = 0.0


# ---- process --------------------------------------------------------------------------


class Attach(Call, tag=int(Sys.ATTACH)):
    """Join the kernel's process table.

    `claim`: the token a spawned child was given. `admin`: the kernel's admin
    key (the file admin.key in its runtime directory, readable by its owner
    only); an admin process may kill any process.
    """

    name: str = ""
    os_pid: int = 0
    claim: str = ""
    admin: str = ""


class Attached(Reply):
    """The new process: its pid, its token (send it with every call) and its lease."""

    pid: int
    token: bytes
    lease_s: float
    abi: int
    kernel: str
    max_bulk_bytes: int = 0  # the largest bulk frame the kernel takes or sends (0: an older kernel, no limit said)


class Exit(Call, tag=int(Sys.EXIT)):
    """Leave the process table; every resource the caller holds is reclaimed."""

    code: int = 0


class Spawn(Call, tag=int(Sys.SPAWN)):
    """Start a registered userland program as a child OS process.

    `quotas`: the child's tensor memory quota per device (bytes, by device
    name); `kv_quota`: its KV block quota in every KV pool. At most the
    parent's (EPERM); unset: the parent's. `models`: model handles of the caller the child
    inherits, like open files across fork and exec: the child holds each
    under the same handle number, so the caller can pass the numbers in `args`
    (needs the `share` right). `rights`: the child's rights (syscalls/rights.py),
    each one the caller holds (EPERM naming the first it lacks); unset: the caller's.
    """

    program: str
    args: list[str] = []
    quotas: dict[str, int] = {}
    kv_quota: int | None = None
    models: list[int] = []
    rights: list[str] | None = None


class Spawned(Reply):
    """The child's llmos pid, its OS pid and the file its output goes to."""

    pid: int
    os_pid: int
    log: str


class Wait(Call, tag=int(Sys.WAIT)):
    """Wait for a child to end. With `follow`, stream its output as PARTIAL replies."""

    pid: int
    timeout_s: float | None = None
    follow: bool = False


class Output(Reply):
    """A PARTIAL reply of `wait --follow`: text the child wrote."""

    data: str


class Exited(Reply):
    """How a process ended: exit status (negative: killed by that signal) and why."""

    pid: int
    status: int
    reason: str


class Kill(Call, tag=int(Sys.KILL)):
    """End a process the caller spawned (or itself); its resources are reclaimed."""

    pid: int
    signal: int = 15


class GetPid(Call, tag=int(Sys.GETPID)):
    """The caller's own pid and its parent's."""


class PidInfo(Reply):
    """Reply of getpid."""

    pid: int
    ppid: int
    name: str
    rights: list[str] = []  # the rights it holds (syscalls/rights.py), sorted


class RightsDrop(Call, tag=int(Sys.RIGHTS_DROP)):
    """Give up `rights` for good (one not held is ignored); none: only ask which are held.

    Dropping `device:NAME` while holding `device:*` keeps the devices known
    now, less that one (syscalls/rights.py).
    """

    rights: list[str] = []


class Rights(Reply):
    """The rights the caller holds now, sorted."""

    rights: list[str]


class Ps(Call, tag=int(Sys.PS)):
    """List the process table."""


class ProcInfo(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One row of the process table."""

    pid: int
    ppid: int
    name: str
    state: str
    os_pid: int
    handles: int  # open handles of every kind: tensors, KV sequences and models
    mem_bytes: int
    syscalls: int
    started: float
    tokens: int = 0  # tokens generated for it so far (a rate over time is its tokens/s)
    rights: list[str] = []  # the rights it holds (syscalls/rights.py)


class ProcList(Reply):
    """Reply of ps."""

    procs: list[ProcInfo]


class ProgList(Call, tag=int(Sys.PROG_LIST)):
    """List the programs the kernel can spawn (its plugins' `llmos_programs`)."""


class ProgramInfo(msgspec.Struct, kw_only=True):
    """One registered program: its name, what it does, and whether it reads its user's input."""

    name: str
    help: str
    interactive: bool


class Programs(Reply):
    """Reply of prog_list, sorted by name."""

    programs: list[ProgramInfo]


# ---- device ---------------------------------------------------------------------------


class DevList(Call, tag=int(Sys.DEV_LIST)):
    """List the devices the kernel's drivers provide."""


class DeviceInfo(Reply):
    """One device: what it is, whether it is online, its memory and what it runs.

    Attributes:
        name: the device's name, `KINDINDEX` (`cpu0`), or `NODE/KINDINDEX` on another machine.
        kind: its driver kind (`cpu`, `cuda`, `mocktpu`).
        state: `starting`, `online`, `offline` (its driver host is being replaced) or `absent`.
        description: one line from the driver.
        capacity_bytes: the device's memory, as its driver reports it.
        used_bytes: memory charged on it now (tensors, models, KV pools).
        dtypes: the dtypes it stores.
        ops: the ops of the op set it runs.
        host_visible: its tensors are shared-memory files the kernel maps (no copy through the driver host).
        driver_os_pid: the OS pid of its current driver host process (a new one after each restart).
        restarts: how many times its driver host was replaced (crash or hang).
        queued: work items waiting in its queue.
        simulated: its time is simulated by a cost model, not measured.
        peak_flops: from the driver's cost figures, where it gives them.
        busy_s: wall time the driver spent running ops.
        sim_busy_s: simulated device time of those ops (simulated devices).
        node: the node of a device on another machine (`llmos host`; its name is `NODE/KINDINDEX`), else "".
        address: where that node's driver host connects from.
        rtt_ms: the round trip of the device's last heartbeat (kernel -> driver host -> kernel).
    """

    name: str
    kind: str
    state: str
    description: str
    capacity_bytes: int
    used_bytes: int
    dtypes: list[str]
    ops: list[str]
    host_visible: bool
    driver_os_pid: int
    restarts: int
    queued: int
    simulated: bool = False
    peak_flops: float = 0.0  # from the driver's cost figures, where it gives them
    busy_s: float = 0.0  # wall time the driver spent running ops
    sim_busy_s: float = 0.0  # simulated device time of those ops (simulated devices)
    node: str = ""
    address: str = ""
    rtt_ms: float = 0.0


class Devices(Reply):
    """Reply of dev_list."""

    devices: list[DeviceInfo]


class DevInfo(Call, tag=int(Sys.DEV_INFO)):
    """Describe one device, by name (`cpu0`) or kind (`cpu`: its first device)."""

    device: str


# ---- memory ---------------------------------------------------------------------------


class Alloc(Call, tag=int(Sys.ALLOC)):
    """Allocate an uninitialised tensor on a device, charged to the caller.

    With `wait`, a tensor that would fit once others free memory waits for
    it instead of failing with EAGAIN.
    """

    device: str
    shape: list[int]
    dtype: str = "float32"
    wait: bool = False


class Free(Call, tag=int(Sys.FREE)):
    """Close a handle; the tensor is freed when no process holds it any more."""

    handle: int


class Write(Call, tag=int(Sys.WRITE)):
    """Overwrite a tensor with the bytes of the one bulk frame that follows.

    Without `offset` the frame is the whole tensor; with it, a piece written
    from that byte on (a tensor larger than the kernel's bulk limit is written so).
    """

    handle: int
    offset: int | None = None


class Read(Call, tag=int(Sys.READ)):
    """Read a tensor: a TensorRef and one bulk frame with its bytes.

    With `offset` and/or `length`, the frame holds at most `length` bytes from
    byte `offset` on (a tensor larger than the kernel's bulk limit is read so).
    """

    handle: int
    offset: int | None = None
    length: int | None = None


class Share(Call, tag=int(Sys.SHARE)):
    """Give another process a handle to the same tensor."""

    handle: int
    pid: int


class Shared(Reply):
    """The handle number the tensor has in the other process's table."""

    handle: int


class Handles(Call, tag=int(Sys.HANDLES)):
    """List a process's handles: what each names and who is charged for it.

    `pid` 0 (the default) is the caller; another live process's handles are
    listed as metadata only (kind, device, bytes, shape), the same facts
    `ps` and `memstat` give in sums to every process: no handle can be used
    from another process's table.
    """

    pid: int = 0


class HandleInfo(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One open handle of the caller.

    `kind`: "tensor", "model" or "kv" (a KV sequence, in `pool`). `nbytes`:
    the memory behind it (0 for a KV sequence, whose blocks belong to its
    pool). `charged`: the pid charged for that memory, or for a KV
    sequence's pool (0: the kernel, once the allocator has let go while
    others hold it). `holders`: how many processes hold it.
    """

    handle: int
    kind: str
    device: str
    nbytes: int = 0
    charged: int = 0
    holders: int = 1
    shape: list[int] = []
    dtype: str = ""
    pool: str = ""
    lost: str = ""  # why it is gone (its device went offline), or ""


class HandleList(Reply):
    """Reply of handles, in handle order."""

    handles: list[HandleInfo]


# ---- compute --------------------------------------------------------------------------


class Compute(Call, tag=int(Sys.COMPUTE)):
    """Run one op of the op set on tensor handles; the result goes to `out` or a new handle."""

    op: str
    inputs: list[int]
    out: int | None = None
    params: Params = {}


# ---- misc -----------------------------------------------------------------------------


class Null(Call, tag=int(Sys.NULL)):
    """Do nothing and answer: the round trip of the syscall path itself."""


class Yield(Call, tag=int(Sys.YIELD)):
    """Move the caller's queued device work behind everyone else's."""


class Yielded(Reply):
    """How many of the caller's queued work items moved to the back."""

    requeued: int


class Stat(Call, tag=int(Sys.STAT)):
    """Kernel-wide figures: uptime, calls served, processes, devices."""


class KernelStat(Reply):
    """Reply of stat."""

    name: str
    abi: int
    os_pid: int
    uptime_s: float
    syscalls: int
    errors: int
    by_syscall: dict[str, int]
    processes: int
    devices: int


# ---- memory: paged KV cache and the memory map -----------------------------------------


class KVPool(Call, tag=int(Sys.KV_POOL)):
    """Find, or create with `blocks` blocks, the KV pool of one model layout on a device."""

    device: str
    layers: int
    kv_heads: int
    head_dim: int
    dtype: str = "bfloat16"
    block_size: int = 16
    blocks: int = 0


class KVPoolInfo(Reply):
    """A KV pool: its name (use it in kv_alloc), geometry and free blocks."""

    pool: str
    device: str
    block_size: int
    block_bytes: int
    num_blocks: int
    free_blocks: int


class KVAlloc(Call, tag=int(Sys.KV_ALLOC)):
    """Allocate a KV sequence for `tokens` (ids: enables prefix sharing) or `length` tokens."""

    device: str
    pool: str
    tokens: list[int] = []
    length: int = 0


class KVAppend(Call, tag=int(Sys.KV_APPEND)):
    """Grow a KV sequence by `tokens` (ids) or `length` tokens."""

    seq: int
    tokens: list[int] = []
    length: int = 0


class KVFork(Call, tag=int(Sys.KV_FORK)):
    """A new sequence sharing all of `seq`'s blocks (copy-on-write; allocates nothing)."""

    seq: int


class KVFree(Call, tag=int(Sys.KV_FREE)):
    """Close a KV sequence handle; its blocks return to the pool (or stay cached)."""

    seq: int


class KVTable(Call, tag=int(Sys.KV_TABLE)):
    """Read a KV sequence's block table."""

    seq: int


class KVSeq(Reply):
    """A KV sequence: its handle, block table and length, and the block copies
    (source, destination) that copy-on-write made on the device."""

    seq: int
    pool: str
    table: list[int]
    num_tokens: int
    shared: int
    copies: list[tuple[int, int]] = []


class MemStat(Call, tag=int(Sys.MEMSTAT)):
    """The memory map of every device: who holds what, what is free, KV pools.

    With `blocks`, each KV pool also lists every block's owner and state
    (`KVPoolStat.owners`, `marks`, `host_owners`): a picture of the pool.
    """

    blocks: bool = False


class KVPoolStat(msgspec.Struct, kw_only=True):
    """One KV pool in the memory map (blocks unless named otherwise)."""

    pool: str
    block_size: int
    block_bytes: int
    total: int
    used: int
    free: int
    cached: int
    shared: int
    sequences: int
    by_process: dict[int, int]
    slack_tokens: int  # reserved in partial last blocks but not holding tokens
    prefix_tokens: int = 0  # model pools: prompt tokens generate calls looked up in the prefix cache
    prefix_hits: int = 0  # of which found (their KV not computed again)
    evictions: int = 0  # cached blocks taken back for other uses, least recently used first
    swapped: int = 0  # sequences whose blocks are in the host swap pool
    host_total: int = 0  # blocks of the host swap pool (0: none)
    host_used: int = 0  # of which holding swapped-out blocks
    # with memstat(blocks=True) only:
    owners: list[int] = []  # per device block: the pid holding it (the first of several sharing it), 0: none
    marks: str = ""  # per device block: "." free, "c" cached (free, keeps a prefix), "u" held once, "s" shared
    host_owners: list[int] = []  # per host swap block: the pid of the swapped-out sequence in it, 0: none


class ModelMem(msgspec.Struct, kw_only=True):
    """One loaded model in the memory map: the kernel's id for it, who pays, and its bytes (all charged)."""

    model: int
    arch: str
    charged: int  # the pid that pays (0: the kernel, its loader gone)
    weights: int  # its weights as held (codes, scales and masks, once quantized or pruned)
    kv: int  # its paged KV storage
    optimizer: int  # gradients and AdamW moments, once it has trained
    compression: str = ""  # what model_quantize / model_prune made of it ("int8", "int4/g32", ...), or ""


class DeviceMem(msgspec.Struct, kw_only=True):
    """One device in the memory map (bytes)."""

    device: str
    capacity: int
    used: int
    free: int
    tensors: int
    by_process: dict[int, int]
    quotas: dict[int, int]
    kv_pools: list[KVPoolStat]
    models: list[ModelMem] = []


class MemMap(Reply):
    """Reply of memstat."""

    devices: list[DeviceMem]


# ---- scheduling ---------------------------------------------------------------------


class SchedGet(Call, tag=int(Sys.SCHED_GET)):
    """Which scheduling policy orders a device's work."""

    device: str


class SchedSet(Call, tag=int(Sys.SCHED_SET)):
    """Switch a device's scheduling policy at run time; queued work is kept."""

    device: str
    policy: str


class QueueEntry(msgspec.Struct, kw_only=True):
    """One process's place in a device's queue: what it waits with and how much.

    `work`: the kind of its next item (`op`, `alloc`, `model_step`, ...), or
    `generate` / `train` for a sequence in a model's batching queue, with
    `model` its model id. `state` (model sequences): waiting, running or
    swapped. `items`: queued work items (model sequences: 1).
    """

    pid: int
    work: str
    items: int = 1
    model: int = 0
    state: str = ""


class SchedInfo(Reply):
    """A device's policy, the policies there are, and how much work is queued.

    `queue`: who waits, in the policy's order: first the device's work queue
    (one entry per busy process), then each model's generate and train
    sequences on the device (its batcher's order).
    """

    device: str
    policy: str
    policies: list[str]
    queued: int
    queue: list[QueueEntry] = []


# ---- drivers ------------------------------------------------------------------------


class DriverList(Call, tag=int(Sys.DRIVER_LIST)):
    """Every driver the plugins provide, and the devices each runs now."""


class DriverInfo(msgspec.Struct, kw_only=True):
    """One driver kind: where its class lives, whether it is loaded, its devices."""

    kind: str
    target: str
    help: str
    loaded: bool
    devices: list[str]


class Drivers(Reply):
    """Reply of driver_list, driver_load and driver_unload."""

    drivers: list[DriverInfo]


class DriverLoad(Call, tag=int(Sys.DRIVER_LOAD)):
    """Start a driver's devices on a running kernel (admin). Newly installed packages are found too."""

    kind: str


class DriverUnload(Call, tag=int(Sys.DRIVER_UNLOAD)):
    """Stop a driver's devices (admin): their work fails with EIO, their tensors are lost."""

    kind: str


# ---- models --------------------------------------------------------------------------


class ModelLoad(Call, tag=int(Sys.MODEL_LOAD)):
    """Load a model on a device, with its own paged KV pool of `kv_blocks` blocks.

    Three sources, at most one of `path` and `checkpoint`:
    - `path`: a Hugging Face-format folder (config.json, *.safetensors,
      tokenizer.json) under the models directory the kernel was booted with
      (read only); `arch` "auto" takes the architecture from its config.json;
    - `checkpoint`: under the kernel's storage directory, an llmos checkpoint
      file or a folder `model_save` wrote in the Hugging Face layout (its
      config wins; `config` may only repeat it);
    - neither: a fresh model of `arch` and `config`, its weights drawn from
      `seed` (the same seed gives the same model).
    `dtype` "" keeps the weights' stored dtype (float32 for a fresh model).
    `cache` False turns prefix caching off for every generate call on it.
    `preempt` says how a generate call gives up its KV blocks when another
    needs them: "recompute" (freed; fed again when it resumes) or "swap"
    (copied to `swap_blocks` blocks of host memory and back; 0: as many as
    `kv_blocks`). Memory is charged to the caller (the swap pool is host
    memory, outside the device's capacity).
    `devices` (two or more, no device twice; `device` "" or the first of
    them): a replicated model, one replica per device, all built from the
    same source, each charged in full; `train_step` trains them data
    parallel (docs/distributed.md). One entry: a plain model on that device.
    """

    device: str = ""
    arch: str = "auto"
    config: dict[str, int | float | str | bool] = {}
    checkpoint: str = ""
    kv_blocks: int = 256
    block_size: int = 16
    dtype: str = ""
    seed: int = 0
    path: str = ""
    cache: bool = True
    preempt: str = "recompute"
    swap_blocks: int = 0
    devices: list[str] = []


class ModelInfo(Reply):
    """A loaded model: its handle, device, full config, parameter count and bytes charged, and its tokenizer.

    `devices`: the devices its replicas are on, in rank order (one for a
    plain model); `device` is the first, whose replica serves generate,
    logprobs and model_save. `bytes` is charged on each of them.

    `tokenizer` names it ("" when the model has none: give token ids, not text);
    `eos` are the ids that end a generation; `chat_template` (Jinja, from the
    folder's tokenizer_config.json, or ""), `bos_token` and `eos_token` are what
    a chat program needs to render a conversation.
    """

    model: int
    device: str
    arch: str
    config: dict[str, int | float | str | bool]
    params: int
    bytes: int
    step: int = 0  # optimizer steps the model has taken (restored from a checkpoint)
    dtype: str = ""
    tokenizer: str = ""
    eos: list[int] = []
    chat_template: str = ""
    bos_token: str = ""
    eos_token: str = ""
    devices: list[str] = []
    compression: str = ""  # what quantize or prune made of its weights ("int8", "int4/g32", "sparse"), or ""


class ModelFree(Call, tag=int(Sys.MODEL_FREE)):
    """Free a model and its KV pool."""

    model: int


class Generate(Call, tag=int(Sys.GENERATE)):
    """Continue `prompt` (text) or `tokens` (ids); streams Generated chunks, ends with Completion.

    `cache` False: compute the whole prompt even where other calls on the
    model already hold its KV (prefix caching, docs/memory.md), and share none.
    """

    model: int
    prompt: str = ""
    tokens: list[int] = []
    max_tokens: int = 64
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = []
    cache: bool = True


class Generated(Reply):
    """A PARTIAL reply of generate: text now safe to show."""

    text: str


class Completion(Reply):
    """The FINAL reply of generate: the whole text, how many tokens were generated, and times.

    Attributes:
        text: the whole generated text (the PARTIAL pieces concatenated), cut before a stop string.
        tokens: tokens generated.
        finish: why it ended: "stop" (a stop string or EOS), "length" (`max_tokens` generated) or
            "max_len" (the model's `max_len` positions were filled first).
        wall_s: from the call to the last token.
        device_s: the device's own time for the steps (its share of batched steps).
        shared_steps: steps batched together with other sequences (continuous batching).
        preemptions: times its KV blocks were taken for others (it re-fed its text, or had its blocks
            swapped back in, and went on).
        swaps: of those, the times its blocks went to the host swap pool (the model's preempt="swap").
        ids: the generated token ids (a model without a tokenizer gives no text, only these).
        cached: tokens of its context whose KV came from the prefix cache instead of being computed
            (counted again when it re-feeds after a preemption).
    """

    text: str
    tokens: int
    finish: str  # "stop" (a stop string or EOS), "length" (max_tokens) or "max_len" (the model's length, first)
    wall_s: float = 0.0  # from the call to the last token
    device_s: float = 0.0  # the device's own time for the steps (its share of batched steps)
    shared_steps: int = 0  # steps batched together with other sequences (continuous batching)
    preemptions: int = 0  # times its KV blocks were taken for others (it re-fed its text and went on)
    ids: list[int] = []  # the generated token ids
    cached: int = 0  # context tokens whose KV came from the prefix cache
    swaps: int = 0  # preemptions by swap (blocks to the host pool and back)


class LogProbs(Call, tag=int(Sys.LOGPROBS)):
    """Log-probability of each token given the ones before it."""

    model: int
    tokens: list[int]


class TokenLogProbs(Reply):
    """One log-probability per token after the first."""

    logprobs: list[float]


class ModelSave(Call, tag=int(Sys.MODEL_SAVE)):
    """Write the model at `path` under the storage directory.

    `format` "llmos": one safetensors checkpoint file (weights, optimizer state
    once trained, step count); "hf": a Hugging Face-format folder (config.json,
    model.safetensors and the tokenizer files of the folder it came from; no
    optimizer state) that `transformers` loads; "" (default): "hf" for a model
    loaded from such a folder, "llmos" otherwise.
    """

    model: int
    path: str
    format: str = ""


class Tokenize(Call, tag=int(Sys.TOKENIZE)):
    """The model's tokenizer's ids for `text`; `special` adds what the tokenizer adds to a prompt (e.g. BOS)."""

    model: int
    text: str
    special: bool = False


class TokenIds(Reply):
    """Token ids."""

    tokens: list[int]


class Detokenize(Call, tag=int(Sys.DETOKENIZE)):
    """The text of token ids under the model's tokenizer (special tokens dropped)."""

    model: int
    tokens: list[int]


class Text(Reply):
    """Text."""

    text: str


class TrainStep(Call, tag=int(Sys.TRAIN_STEP)):
    """One optimizer step (AdamW) on a batch of equal-length token windows; the optimizer state stays on the device.

    Each row of `tokens` is a window of T + 1 ids: the model reads the first T
    and learns to predict the last T. `clip` caps the gradient norm (0: no clipping).
    """

    model: int
    tokens: list[list[int]]
    lr: float = 3e-3
    weight_decay: float = 0.01
    clip: float = 1.0


class TrainResult(Reply):
    """The loss of the batch before the step, the gradient norm, and the model's step count after it.

    A replicated model's step: `replicas` took part (each on its shard; the
    loss and norm are the whole batch's), `device_s` is the slowest one's,
    and `diverged` says their weights differ after the step (it should never
    be true: every replica takes the same step from the same weights).
    """

    loss: float
    grad_norm: float
    step: int
    device_s: float = 0.0
    replicas: int = 1
    diverged: bool = False


# ---- models: compression --------------------------------------------------------------


class ModelQuantize(Call, tag=int(Sys.MODEL_QUANTIZE)):
    """Quantize the model's linear layers, weights only: "int8" (a scale per output channel) or "int4" (a scale
    per `group_size` weights of a row; 0: 32). Activations stay in the model's dtype.

    `windows` are held-out token windows (as `logprobs` takes them) to score
    the model on before and after; none: perplexity is not measured (0.0).
    """

    model: int
    scheme: str
    group_size: int = 0
    windows: list[list[int]] = []


class ModelPrune(Call, tag=int(Sys.MODEL_PRUNE)):
    """Prune the model's linear layers by magnitude to `sparsity` in [0, 1): `pattern` "unstructured" (the
    smallest weights of each matrix) or "2:4" (2 of every 4 in a row; sparsity 0.5). `windows` as for quantize."""

    model: int
    sparsity: float
    pattern: str = "unstructured"
    windows: list[list[int]] = []


class Compressed(Reply):
    """What a quantize or prune did: the model before and after.

    Attributes:
        compression: what its compressed matrices are now ("int8", "int4/g32", "sparse").
        layers: how many matrices were compressed.
        sparsity: the fraction of their weights that are zero, measured on the weights as used.
        bytes_before, bytes_after: the bytes its weights held (codes, scales and masks included).
        charged_before, charged_after: the model's memory charge (weights, KV storage, optimizer state).
        perplexity_before, perplexity_after: over `windows` (0.0 without them).
        tok_s_before, tok_s_after: greedy decode tokens/s of one sequence through its paged step.
        device_s: the device's time for the call (measuring included).
    """

    compression: str
    layers: int
    sparsity: float
    bytes_before: int
    bytes_after: int
    charged_before: int
    charged_after: int
    perplexity_before: float
    perplexity_after: float
    tok_s_before: float
    tok_s_after: float
    device_s: float = 0.0


# ---- tracing ------------------------------------------------------------------------


class TraceRead(Call, tag=int(Sys.TRACE_READ)):
    """The kernel's recent timeline events from number `since` on (0: all it keeps).

    The kernel keeps the last few thousand device, scheduling and KV events
    (`device.busy`, `device.idle`, `sched.preempt`, `kv.swap_out`, ...) in a
    ring, whether or not it logs them: a console draws "who ran when" from
    them without reading the kernel's log file.
    """

    since: int = 0


class TraceEvent(msgspec.Struct, array_like=True):
    """One timeline event: its number, monotonic time, name and fields (as in the kernel's debug log)."""

    seq: int
    t: float
    event: str
    fields: dict[str, TraceValue]


class TraceLog(Reply):
    """Reply of trace_read: the events kept from `since` on, the number to ask from next, the kernel's clock now.

    `lost`: events after `since` that the ring no longer holds (asked too late).
    """

    events: list[TraceEvent]
    next: int
    now: float
    lost: int = 0
