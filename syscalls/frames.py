"""Frames on the wire: the envelope around every call and reply, and limits.

A request is a ZeroMQ multipart message:
    frame 0: msgpack [abi, rid, token, call]   (the Envelope; `call` is tagged by `nr`)
    frame 1..: raw tensor bytes, as many as the syscall's `bulk_in`
A reply is:
    frame 0: msgpack [rid, kind, body]         (kind FINAL, PARTIAL or ERROR)
    frame 1..: raw tensor bytes (FINAL only), as many as the syscall's `bulk_out`
The encoders and decoders are built once, here, with the receive helper both
ends use on their hot paths (`recv_frames`).
"""

from typing import Union

import msgspec
import zmq

from . import messages as m
from .table import Request

ABI_VERSION = 1

FINAL, PARTIAL, ERROR = 0, 1, 2

MAX_HEADER_BYTES = 1 << 20  # frame 0 of a request; larger is E2BIG
TOKEN_BYTES = 16

CallUnion = Union[tuple(Request)]  # noqa: UP007 - a runtime union of the request types


class Envelope(msgspec.Struct, array_like=True):
    """Frame 0 of a request: ABI version, request id, the caller's token, the call."""

    abi: int
    rid: int
    token: bytes
    call: CallUnion


class LooseEnvelope(msgspec.Struct, array_like=True):
    """An envelope whose call is left undecoded: used to answer a bad call by its rid."""

    abi: int
    rid: int
    token: bytes
    call: msgspec.Raw


class ReplyOut(msgspec.Struct, array_like=True):
    """Frame 0 of a reply, as the kernel encodes it."""

    rid: int
    kind: int
    body: m.Reply


class ReplyIn(msgspec.Struct, array_like=True):
    """Frame 0 of a reply, as a client decodes it: the body waits for its type."""

    rid: int
    kind: int
    body: msgspec.Raw


encoder = msgspec.msgpack.Encoder()
envelope_decoder = msgspec.msgpack.Decoder(Envelope)
loose_envelope_decoder = msgspec.msgpack.Decoder(LooseEnvelope)
reply_decoder = msgspec.msgpack.Decoder(ReplyIn)
error_decoder = msgspec.msgpack.Decoder(m.Error)
any_decoder = msgspec.msgpack.Decoder()


def encode_call(rid: int, token: bytes, call: m.Call) -> bytes:
    """Frame 0 of a request."""
    return encoder.encode(Envelope(ABI_VERSION, rid, token, call))


def encode_reply(rid: int, kind: int, body: m.Reply) -> bytes:
    """Frame 0 of a reply."""
    return encoder.encode(ReplyOut(rid, kind, body))


MORE = int(zmq.SNDMORE)  # a plain int: pyzmq's send_multipart ORs enum Flags, about a microsecond a part


def send_frames(sock: zmq.Socket, parts: list, copy: bool = True) -> None:
    """Send `parts` as one message: `sock.send_multipart(parts, copy=copy)` without its per-part
    type checks and enum arithmetic (the kernel sends two or three messages per syscall)."""
    last = len(parts) - 1
    for i, part in enumerate(parts):
        sock.send(part, MORE if i < last else 0, copy=copy)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list[zmq.Frame]:
    """One whole message as zero-copy Frames: `sock.recv_multipart(copy=False)`, cheaper.

    Each Frame says itself whether more follow (`Frame.more`, read in C when
    it is received); pyzmq's recv_multipart asks the socket instead, through
    its Python-level getsockopt, about a microsecond per frame on a null call.
    """
    frame = sock.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(flags, copy=False)
        frames.append(frame)
    return frames

