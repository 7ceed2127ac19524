"""Rights: what a process may do beyond its handles and quotas (capabilities, as in seL4 and Capsicum).

Every process holds a set of rights, named by strings. The syscall table
names the right each call needs (`Syscall.right`, docs/abi.md); the kernel
checks it in one place, before the handler runs, and refuses a call without
it with EPERM naming the right. Rights only ever shrink along a process's
line: `spawn` hands a child a subset of the parent's rights (the parent's
by default), and `rights_drop` gives some up for good. Attaching with the
kernel's admin key gives all of them; a plain attach gets `DEFAULT`.

Device rights are `device:NAME` (`device:cpu0`); `device:*` stands for
every device, those loaded later included.

This module is pure (no kernel state): the kernel, the client and the
property tests share its rules.
"""

DEVICE_PREFIX = "device:"
ANY_DEVICE = "device:*"

RIGHTS: dict[str, str] = {
    "spawn": "start child processes (spawn)",
    "kill": "end itself or its children (kill)",
    "kill_any": "end any process, not only its children (kill)",
    "driver": "load and unload drivers (driver_load, driver_unload)",
    "sched": "switch a device's scheduling policy (sched_set)",
    "models": "load model folders from the models directory (model_load with a path)",
    "checkpoint": "write checkpoints under the storage directory (model_save)",
    "share": "share handles with other processes (share, spawn with models)",
    ANY_DEVICE: "use every device: allocate on it, load models and KV pools there",
}
"""Every right there is (besides `device:NAME` for one device), with what it allows."""

ALL: frozenset[str] = frozenset(RIGHTS)
"""What an admin attach gets: every right."""

DEFAULT: frozenset[str] = ALL - {"driver", "kill_any"}
"""What a plain attach gets: all but the owner's (drivers, ending others' processes)."""


def is_right(name: str) -> bool:
    """Whether `name` names a right: one of RIGHTS, or `device:NAME` for a non-empty NAME."""
    return name in RIGHTS or (name.startswith(DEVICE_PREFIX) and len(name) > len(DEVICE_PREFIX))


def check_names(names) -> None:
    """ValueError naming the first string in `names` that is not a right."""
    for name in names:
        if not isinstance(name, str) or not is_right(name):
            raise ValueError(f"{name!r} is not a right; rights are {', '.join(sorted(RIGHTS))} and device:NAME")


def holds(rights: frozenset[str], right: str) -> bool:
    """Whether a process holding `rights` has `right` (`device:*` covers every `device:NAME`)."""
    return right in rights or (right.startswith(DEVICE_PREFIX) and ANY_DEVICE in rights)


def subset(asked, parent: frozenset[str]) -> frozenset[str]:
    """The rights a child asks for, if its parent holds every one; ValueError for a bad name, PermissionError
    naming the first right the parent lacks."""
    asked = frozenset(asked)
    check_names(asked)
    for right in sorted(asked):
        if not holds(parent, right):
            raise PermissionError(right)
    return asked


def drop(rights: frozenset[str], dropped, devices) -> frozenset[str]:
    """`rights` without `dropped` (a right not held is ignored). Dropping one device while holding `device:*`
    turns the wildcard into the devices known now (`devices`, names) less that one."""
    dropped = frozenset(dropped)
    check_names(dropped)
    kept = set(rights - dropped)
    lone = {r for r in dropped if r.startswith(DEVICE_PREFIX) and r != ANY_DEVICE}
    if lone and ANY_DEVICE in kept:
        kept.discard(ANY_DEVICE)
        kept |= {DEVICE_PREFIX + name for name in devices} - lone
    return frozenset(kept)


def summary(rights) -> str:
    """A short account of a set of rights for a table: `all`, `default`, or the nearer of the two with what
    is missing (`-spawn`) and what is extra (`+device:cpu0`)."""
    rights = frozenset(rights)
    base, name = (ALL, "all") if "driver" in rights or "kill_any" in rights else (DEFAULT, "default")
    changes = [f"-{r}" for r in sorted(base - rights)] + [f"+{r}" for r in sorted(rights - base)]
    return " ".join([name, *changes])
