"""Kernel configuration: one Struct, with the defaults a user gets from `llmos boot`."""

import msgspec


class KernelConfig(msgspec.Struct, kw_only=True):
    """Everything a kernel is booted with. Times in seconds, sizes in bytes."""

    name: str = "default"  # several kernels can run side by side under different names
    runtime_dir: str | None = None  # default: $LLMOS_RUNTIME_DIR, $XDG_RUNTIME_DIR/llmos or /tmp/llmos-UID
    storage_dir: str | None = None  # model checkpoints; default: RUNTIME/NAME/storage
    models_dir: str | None = None  # Hugging Face-format model folders, read only (`model_load(path=...)`); None: none
    tcp: str | None = None  # "HOST:PORT" to listen on TCP too (CurveZMQ keys required)
    keys_dir: str | None = None  # from `llmos keygen`; needed with tcp
    insecure: bool = False  # allow tcp without keys (explicit opt-in)
    drivers: list[str] | None = None  # driver kinds to start; None: every one the plugins provide
    driver_options: dict[str, dict] = {}  # per kind, passed to the driver
    default_quota: int | None = None  # per process per device; None: the whole device
    kv_quota: int | None = None  # KV blocks per process per pool; None: the whole pool
    policy: str = "fcfs"  # scheduling policy of every device's work queue
    policies: dict[str, str] = {}  # per device name (cpu0), overriding `policy`
    # constructor options per policy; on a device queue, quanta count work items
    policy_options: dict[str, dict] = msgspec.field(default_factory=lambda: {"rr": {"quantum": 1}, "mlfq": {"quantum": 1}})
    max_procs_per_user: int = 256  # attached processes per OS user (who owns the attaching process); admin exempt
    lease_s: float = 15.0  # an attached process that makes no call for this long is reclaimed
    ping_s: float = 1.0  # heartbeat to idle driver hosts
    hang_s: float = 5.0  # a heartbeat unanswered this long means the host hangs
    node_beats: int = 3  # a remote driver host silent for this many beats (NODE_BEAT_S each) is offline
    op_timeout_s: float = 120.0  # one device call may take this long before the host is declared hung
    restart_backoff_s: tuple[float, float] = (0.1, 5.0)  # first and largest delay between driver restarts
    # a replicated model's process group: joining it and each all-reduce fail (EIO) after this (docs/distributed.md)
    group_timeout_s: float = 10.0
    # the largest bulk frame (tensor bytes) of one call; the client writes and reads larger tensors in pieces
    max_bulk_bytes: int = 1 << 30
    parent_os_pid: int = 0  # embedded kernels: stop once this OS process is no longer the parent; 0: never
    max_children: int = 64  # live children one process may have (spawn answers EAGAIN beyond)
    # nice value of the kernel and its driver hosts (kernel/priority.py); programs it spawns keep the caller's
    nice: int = -5
    audit: bool = True  # keep the audit trail, RUNTIME/NAME/audit.log (kernel/audit.py)
    audit_max_bytes: int = 16 << 20  # the audit log rotates past this size
    storage_key: str | None = None  # key file of sealed checkpoints (created 0600 if missing); implies encryption
    encrypt_storage: bool = False  # seal checkpoints; key: storage_key, else RUNTIME/NAME/storage.key
    refuse_plain: bool = False  # refuse to load checkpoints that are not sealed
    log_level: str = "info"
    log_file: str | None = None  # default: stderr
