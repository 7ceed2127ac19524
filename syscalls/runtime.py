"""The runtime directory: where a kernel's socket, state file, logs and shared memory live.

This layout is part of the contract between the kernel and the clients on
one machine: a client finds a kernel by its name through the state file.

Only its owner may open it: the kernel creates it 0700 and refuses to use
one that another user owns or that others can enter, since the socket in it
is the door to the kernel.
"""

import json
import os
import shutil
import stat

STATE_FILE = "kernel.json"
ADMIN_KEY_FILE = "admin.key"
STORAGE_KEY_FILE = "storage.key"  # seals checkpoints under `--encrypt-storage`; kept across boots (0600)


class RuntimeDirError(RuntimeError):
    """The runtime directory is unsafe or unusable."""


def base_dir(configured: str | None = None) -> str:
    """The folder that holds one subfolder per kernel name."""
    if configured:
        return configured
    if os.environ.get("LLMOS_RUNTIME_DIR"):
        return os.environ["LLMOS_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "llmos")
    return f"/tmp/llmos-{os.getuid()}"


def kernel_dir(name: str, configured: str | None = None) -> str:
    """The runtime folder of the kernel called `name`."""
    return os.path.join(base_dir(configured), name)


def ensure_private(path: str) -> str:
    """Create `path` (and its parents) 0700, or check that it is ours and private."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.getuid():
        raise RuntimeDirError(f"{path} belongs to uid {st.st_uid}, not to you; choose another runtime dir")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise RuntimeDirError(f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); run chmod 700 {path}")
    return path


def shm_dir(name: str, os_pid: int | None = None) -> str:
    """A private folder in shared memory for host-visible tensors of the kernel `name` (run by `os_pid`, or this process)."""
    root = "/dev/shm" if os.path.isdir("/dev/shm") else base_dir()
    return os.path.join(root, f"llmos-{os.getuid()}-{name}-{os.getpid() if os_pid is None else os_pid}")


def write_state(path: str, state: dict) -> None:
    """Atomically write the kernel's state file (address, pid, readiness)."""
    tmp = os.path.join(path, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(path, STATE_FILE))


def read_state(path: str) -> dict | None:
    """The kernel's state file, or None if there is no kernel there."""
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_secret(path: str, name: str, secret: str) -> None:
    """Write a secret file that only the owner can read."""
    fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)


def read_secret(path: str, name: str) -> str:
    """Read a secret file, or "" if there is none (or it is not ours to read)."""
    try:
        with open(os.path.join(path, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def remove(path: str) -> None:
    """Remove a folder and everything in it, if it exists."""
    shutil.rmtree(path, ignore_errors=True)
