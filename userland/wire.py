"""What both clients share: address lookup, reply decoding, tensors to bytes and back.

No sockets here; `client` (blocking) and `aclient` (asyncio) do the I/O.
torch is imported by the tensor helpers only, when first used, so a program
that never moves a tensor (one that only generates text, say) starts fast.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import msgspec

from llmos.syscalls import runtime
from llmos.syscalls import Errno
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls.table import BY_REQUEST

from .errors import LlmosError

if TYPE_CHECKING:
    import torch

REPLY_DECODERS = {row.request: msgspec.msgpack.Decoder(row.reply) for row in BY_REQUEST.values()}
PARTIAL_DECODERS = {row.request: msgspec.msgpack.Decoder(row.partial) for row in BY_REQUEST.values() if row.partial}


def kernel_name(name: str | None = None) -> str:
    """The local kernel's name: `name`, else $LLMOS_NAME, else "default"."""
    return name or os.environ.get("LLMOS_NAME", "default")


def kernel_address(name: str | None = None) -> str:
    """Where the kernel is: $LLMOS_KERNEL, else the state file of the local kernel `name`."""
    if os.environ.get("LLMOS_KERNEL") and not name:
        return checked_address(os.environ["LLMOS_KERNEL"], "$LLMOS_KERNEL")
    name = kernel_name(name)
    state = runtime.read_state(runtime.kernel_dir(name))
    if not state:
        raise LlmosError(
            Errno.ECONNREFUSED, f"no kernel named {name!r} is running (no state in {runtime.kernel_dir(name)}); start one with `llmos boot`"
        )
    return state["address"]


def checked_address(address: str, source: str = "the address") -> str:
    """`address` if it is a ZeroMQ endpoint a client can connect to (ipc://, tcp://), else EINVAL saying so."""
    if address.partition("://")[0] not in ("ipc", "tcp") or not address.partition("://")[2]:
        raise LlmosError(Errno.EINVAL, f"{source} is {address!r}, not a kernel address (ipc://PATH or tcp://HOST:PORT); "
                                       "a local kernel's name goes in $LLMOS_NAME or --kernel")  # fmt: skip
    return address


def admin_key(name: str | None = None) -> str:
    """The admin key of the local kernel `name` (only its owner can read it)."""
    key = runtime.read_secret(runtime.kernel_dir(kernel_name(name)), runtime.ADMIN_KEY_FILE)
    if not key:
        raise LlmosError(Errno.EPERM, f"cannot read the admin key of kernel {kernel_name(name)!r}: is it running, and yours?")
    return key


def curve_keys(keys_dir: str | None, role: str = "client") -> tuple[bytes, bytes, bytes] | None:
    """(server public, own public, own secret) from a `llmos keygen` folder (the `role` key pair: "client",
    or "host" for a remote driver host) or $LLMOS_CURVE."""
    import zmq.auth

    if keys_dir:
        server_public, _ = zmq.auth.load_certificate(os.path.join(keys_dir, "server.key"))
        public, secret = zmq.auth.load_certificate(os.path.join(keys_dir, f"{role}.key_secret"))
        return server_public, public, secret
    if os.environ.get("LLMOS_CURVE"):
        return tuple(k.encode() for k in json.loads(os.environ["LLMOS_CURVE"]))
    return None


def decode_reply(request: type[m.Call], kind: int, body: msgspec.Raw) -> m.Reply:
    """Decode a reply body for this request type; raise LlmosError for an ERROR reply."""
    if kind == fr.ERROR:
        err = fr.error_decoder.decode(body)
        raise LlmosError(err.errno, err.message)
    if kind == fr.PARTIAL:
        return PARTIAL_DECODERS[request].decode(body)
    return REPLY_DECODERS[request].decode(body)


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """A tensor's bytes, without a copy where it is already contiguous on the CPU."""
    import torch

    t = t.detach().cpu().contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def dtype_name(t: torch.Tensor) -> str:
    """The ABI name of a tensor's dtype."""
    return str(t.dtype).removeprefix("torch.")


def from_bytes(ref: m.TensorRef, buf) -> torch.Tensor:
    """A tensor over the bytes of a read reply (no copy)."""
    import torch

    dtype = getattr(torch, ref.dtype)
    if ref.nbytes == 0:
        return torch.empty(ref.shape, dtype=dtype)
    return torch.frombuffer(buf, dtype=torch.uint8).view(dtype).reshape(ref.shape)
