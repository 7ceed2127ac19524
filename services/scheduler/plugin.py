"""The scheduler service as an llmos plugin: it contributes the built-in policies.

The kernel merges the dicts every plugin returns from
`llmos_scheduler_policies`, so a third-party package adds a policy by
implementing the same hook in its own plugin.
"""

from llmos.services.scheduler.policies import BUILTIN, Policy
from llmos.syscalls.plugin import hookimpl


@hookimpl
def llmos_scheduler_policies() -> dict[str, type[Policy]]:
    """Return the built-in policies: fcfs, rr, priority, mlfq, vtc."""
    return dict(BUILTIN)
