"""The metadata header of a safetensors file, read without torch.

A safetensors file starts with an 8-byte little-endian length and that many
bytes of JSON; its `__metadata__` entry holds the strings an llmos
checkpoint keeps its architecture and config in (see checkpoint.py). The
kernel reads it to size a model before any driver loads the file.
"""

import json
import struct

MAX_HEADER_BYTES = 100 << 20
"""safetensors' own limit on the JSON header."""


def read_metadata(path: str) -> dict[str, str]:
    """The `__metadata__` of the safetensors file at `path`; ValueError if it is not one, OSError if unreadable."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (size,) = struct.unpack("<Q", head)
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"{path} declares a {size}-byte header: not a safetensors file")
        raw = f.read(size)
    if len(raw) < size:
        raise ValueError(f"{path} is truncated: its header is cut short")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} has no valid safetensors header: {exc}") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{path} has no safetensors metadata")
    return meta
