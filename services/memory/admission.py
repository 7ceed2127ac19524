"""The three answers of every memory admission check.

OK: it fits now. LATER: it would fit once others free memory, so the caller may
wait or retry. NEVER: it is larger than the device or the caller's quota, so
waiting cannot help and the caller should fail with ENOMEM.
"""

import enum


class Admission(enum.Enum):
    """Answer of an admission check: OK, LATER or NEVER."""

    OK = "ok"
    LATER = "later"
    NEVER = "never"
