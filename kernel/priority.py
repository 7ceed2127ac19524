"""CPU priority of the system processes: the kernel and its driver hosts above the programs they serve.

MINIX 3 runs its drivers and servers in higher scheduling queues than user
processes, so that a busy user process cannot hold up a server everyone
waits on. llmos does the same with the OS's nice values: at boot the kernel
asks for `KernelConfig.nice` (default -5) before it starts any thread, so
its ZeroMQ I/O thread and the driver hosts it starts inherit it; the
programs it spawns go back to the nice value the kernel was started with
(LLMOS_NICE, read by `llmos.userland.launch`).

Raising priority needs CAP_SYS_NICE (root) or a RLIMIT_NICE that allows it.
Without either the kernel runs at the priority it was given and says so
once in its log (`kernel.priority`); nothing else changes. Under load on a
machine with fewer cores than busy processes, this is the difference between
a kernel that answers within a scheduler tick and one that waits for its
turn behind its own clients (docs/benchmarks.md, `llmos bench load`).
"""

import os

NICE_ENV = "LLMOS_NICE"


def raise_priority(nice: int) -> tuple[int, int, str]:
    """Ask for `nice` for this thread and the threads and processes it starts from now on.

    Returns (nice before, nice now, why unchanged or ""). Never raises: a
    priority the OS refuses is not a reason to stop booting.
    """
    before = os.getpriority(os.PRIO_PROCESS, 0)
    if nice >= before:
        return before, before, ""  # only ever raised here; a lower priority is the user's `nice`
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as exc:
        return before, before, f"not permitted ({exc.strerror}); needs CAP_SYS_NICE or RLIMIT_NICE"
    return before, os.getpriority(os.PRIO_PROCESS, 0), ""


def restore_user_priority() -> None:
    """In a spawned program, before anything else: go back to the nice value of whoever booted the kernel."""
    value = os.environ.get(NICE_ENV)
    if value is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, int(value))  # lowering one's own priority is always allowed
    except (OSError, ValueError):
        pass
