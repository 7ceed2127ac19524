"""The metadata of a safetensors file, read without torch.

An llmos checkpoint keeps its architecture and config as strings in the
file's `__metadata__` (see checkpoint.py). The kernel reads them to size a
model before any driver loads the file, through safetensors' own reader with
the numpy framework, so the kernel process never imports torch.
"""

import json

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


def header_bytes(prefix: bytes) -> int:
    """How many leading bytes of a safetensors file hold its header (the 8-byte length and the JSON)."""
    if len(prefix) < 8:
        raise ValueError("too short for a safetensors file")
    return 8 + int.from_bytes(prefix[:8], "little")


def metadata_of(prefix: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file from its first bytes (at least `header_bytes` of them);
    ValueError if they are not a safetensors header (the kernel reads sealed checkpoints' this way)."""
    end = header_bytes(prefix)
    if len(prefix) < end or end > 8 + (100 << 20):
        raise ValueError("not a safetensors file (its header length is past the data)")
    try:
        header = json.loads(prefix[8:end])
    except ValueError as exc:
        raise ValueError(f"not a safetensors header: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not meta:
        raise ValueError("no safetensors metadata")
    return meta
