"""`python -m llmos.kernel CONFIG_JSON`: run a kernel process in the foreground.

`llmos boot` is the friendly way; this entry is what `llmos.kernel.boot`
starts for an embedded kernel (tests, demo, benchmarks).
"""

import sys

import msgspec

from .config import KernelConfig
from .main import run_kernel

if __name__ == "__main__":
    config = msgspec.json.decode(sys.argv[1], type=KernelConfig) if len(sys.argv) > 1 else KernelConfig()
    sys.exit(run_kernel(config))
