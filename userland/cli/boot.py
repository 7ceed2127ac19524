"""`llmos boot`: run a kernel in the foreground until Ctrl-C."""

import argparse
import json
import os

from llmos.kernel.config import KernelConfig
from llmos.kernel.main import run_kernel


def add_parser(sub) -> None:
    """Add `llmos boot`."""
    p = sub.add_parser(
        "boot",
        help="run a kernel in the foreground (Ctrl-C stops it)",
        description="Run a kernel in this terminal. It listens on a private ipc:// socket in its runtime "
        "directory; programs find it by name. Logs are JSON lines on stderr. Ctrl-C or SIGTERM shut it down "
        "cleanly: programs are stopped, memory is freed, driver hosts exit.",
    )
    p.add_argument("--name", default="default", help="kernel name; several kernels can run under different names")
    p.add_argument("--runtime-dir", help="folder for kernel runtime dirs (default: $XDG_RUNTIME_DIR/llmos or /tmp/llmos-UID)")
    p.add_argument("--drivers", help="comma-separated driver kinds to start (default: every installed driver)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP; needs --keys (or --insecure)")
    p.add_argument("--keys", metavar="DIR", help="CurveZMQ keys from `llmos keygen DIR`")
    p.add_argument("--insecure", action="store_true", help="allow --tcp without keys: anyone who reaches the port gets in")
    p.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="[DEVICE=]NAME",
        help="scheduling policy of the device queues: fcfs (default), rr, priority, mlfq, vtc; DEVICE=NAME for one device",
    )
    p.add_argument("--quota", type=int, metavar="BYTES", help="default per-process memory quota on each device")
    p.add_argument(
        "--max-bulk-bytes", type=int, default=KernelConfig().max_bulk_bytes, metavar="BYTES",
        help="largest tensor frame of one call (default 1 GiB); clients move larger tensors in pieces",
    )
    p.add_argument("--lease", type=float, default=15.0, metavar="S", help="reclaim a process silent this long (default 15)")
    p.add_argument(
        "--max-procs-per-user",
        type=int,
        default=KernelConfig().max_procs_per_user,
        metavar="N",
        help="attached processes allowed per OS user; more attaches get EAGAIN (default %(default)s; the admin is exempt)",
    )
    p.add_argument(
        "--models", metavar="DIR",
        help="folder of Hugging Face-format model folders that model_load(path=...) may read (read only)",
    )
    p.add_argument(
        "--driver-option", action="append", default=[], type=driver_option, metavar="KIND.KEY=VALUE",
        help="an option of one driver kind, VALUE as JSON or else a string: cpu.count=2 makes two CPU devices, "
             "cpu.threads=1 one torch thread per CPU driver host (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--encrypt-storage", action="store_true",
        help="seal checkpoints model_save writes (AES-GCM); the key is RUNTIME/NAME/storage.key (0600, made once, "
             "kept across boots) unless --storage-key names one",
    )
    p.add_argument("--storage-key", metavar="FILE", help="key file of sealed checkpoints (made 0600 if missing); implies --encrypt-storage")
    p.add_argument("--refuse-plain", action="store_true", help="refuse to load checkpoints that are not sealed (EPERM)")
    p.add_argument("--no-audit", action="store_true", help="keep no audit trail (RUNTIME/NAME/audit.log; `llmos audit`)")
    p.add_argument(
        "--audit-max-bytes", type=int, default=KernelConfig().audit_max_bytes, metavar="BYTES",
        help="rotate the audit log past this size (default 16 MiB); rotated files are kept, the chain goes on",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-file", help="append logs here instead of stderr")
    p.set_defaults(func=run)


def driver_option(text: str) -> tuple[str, str, object]:
    """Parse one `--driver-option KIND.KEY=VALUE` into (kind, key, value); VALUE is JSON where it parses as JSON."""
    name, sep, raw = text.partition("=")
    kind, dot, key = name.partition(".")
    if not (sep and dot and kind and key):
        raise argparse.ArgumentTypeError(f"{text!r} is not KIND.KEY=VALUE (e.g. cpu.count=2)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    if (kind, key) == ("cpu", "count") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise argparse.ArgumentTypeError(f"cpu.count must be an integer >= 1, not {raw!r}")
    return kind, key, value


def run(args: argparse.Namespace) -> int:
    """Boot with the options given."""
    default = [p for p in args.policy if "=" not in p]
    per_device = dict(p.split("=", 1) for p in args.policy if "=" in p)
    driver_options: dict[str, dict] = {}
    for kind, key, value in args.driver_option:
        driver_options.setdefault(kind, {})[key] = value
    config = KernelConfig(
        policy=default[-1] if default else "fcfs",
        policies=per_device,
        name=args.name,
        runtime_dir=args.runtime_dir,
        drivers=args.drivers.split(",") if args.drivers else None,
        driver_options=driver_options,
        tcp=args.tcp,
        keys_dir=args.keys,
        insecure=args.insecure,
        default_quota=args.quota,
        lease_s=args.lease,
        max_bulk_bytes=args.max_bulk_bytes,
        max_procs_per_user=args.max_procs_per_user,
        models_dir=os.path.abspath(args.models) if args.models else None,
        encrypt_storage=args.encrypt_storage,
        storage_key=os.path.abspath(args.storage_key) if args.storage_key else None,
        refuse_plain=args.refuse_plain,
        audit=not args.no_audit,
        audit_max_bytes=args.audit_max_bytes,
        log_level=args.log_level,
        log_file=args.log_file,
    )
    return run_kernel(config)
