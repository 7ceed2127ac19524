"""The metadata of a safetensors file, read without torch.

An llmos checkpoint keeps its architecture and config as strings in the
file's `__metadata__` (see checkpoint.py). The kernel reads them to size a
model before any driver loads the file, through safetensors' own reader with
the numpy framework, so the kernel process never imports torch.
"""

from safetensors import SafetensorError, safe_open


def read_metadata(path: str) -> dict[str, str]:
    """The `__metadata__` of the safetensors file at `path`; ValueError if it is not one, OSError if unreadable."""
    try:
        with safe_open(path, framework="numpy") as f:
            meta = f.metadata()
    except SafetensorError as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if not meta:
        raise ValueError(f"{path} has no safetensors metadata")
    return meta
