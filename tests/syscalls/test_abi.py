"""The ABI's structs, numbers and frames."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmos.syscalls import Errno, Sys
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.syscalls.table import BY_NR, TABLE

# msgpack integers are 64-bit: generate ints the wire can carry
INT64 = st.integers(-(2**63), 2**64 - 1)

# The released numbers: this list may only grow at its end (append-only table).
RELEASED = [
    "null", "attach", "exit", "spawn", "wait", "kill", "getpid", "ps", "dev_list", "dev_info",
    "alloc", "free", "write", "read", "share", "compute", "yield", "stat",
    "kv_pool", "kv_alloc", "kv_append", "kv_fork", "kv_free", "kv_table", "memstat",
    "sched_get", "sched_set", "driver_list", "driver_load", "driver_unload",
    "model_load", "model_free", "generate", "logprobs", "model_save", "train_step", "prog_list", "handles",
]  # fmt: skip


def test_numbers_are_append_only():
    names = [s.name.lower() for s in Sys]
    assert names[: len(RELEASED)] == RELEASED, "a released syscall number was renumbered or removed"
    assert [int(s) for s in Sys] == list(range(len(Sys)))


def test_table_has_one_row_per_number_and_tags_match():
    assert [int(row.nr) for row in TABLE] == [int(s) for s in Sys]
    for row in TABLE:
        assert msgspec.structs.StructConfig and row.request.__struct_config__.tag == int(row.nr)
        assert BY_NR[int(row.nr)] is row
        assert row.streams == (row.partial is not None)


def _structs(cls):
    """Instances of a message struct with wire-sized ints (recursing into nested structs)."""

    def field(tp):
        if tp is int:
            return INT64
        if tp is float:
            return st.floats(allow_nan=False)  # NaN != NaN would fail the equality, not the wire
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            return _structs(tp)
        args = getattr(tp, "__args__", ())
        origin = getattr(tp, "__origin__", None)
        if origin is list:
            return st.lists(field(args[0]), max_size=4)
        if origin is tuple:
            return st.tuples(*(field(a) for a in args))
        if origin is dict:
            return st.dictionaries(field(args[0]), field(args[1]), max_size=3)
        if args:  # a union
            return st.one_of([field(a) for a in args])
        return st.from_type(tp)

    hints = {f.name: f.type for f in msgspec.structs.fields(cls)}
    return st.builds(cls, **{name: field(tp) for name, tp in hints.items()})


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.name)
def test_every_request_round_trips(row):
    @given(_structs(row.request))
    def check(call):
        decoded = fr.envelope_decoder.decode(fr.encode_call(7, b"t" * 16, call))
        assert decoded.call == call and decoded.rid == 7 and decoded.abi == fr.ABI_VERSION

    check()


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.name)
def test_every_reply_round_trips(row):
    decoder = msgspec.msgpack.Decoder(row.reply)

    @given(_structs(row.reply))
    def check(body):
        reply = fr.reply_decoder.decode(fr.encode_reply(3, fr.FINAL, body))
        assert reply.rid == 3 and decoder.decode(reply.body) == body

    check()


def test_defaults_are_not_sent():
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(m.Alloc(device="cpu", shape=[1]))) == {
        "nr": int(Sys.ALLOC),
        "device": "cpu",
        "shape": [1],
    }


def test_requests_reject_unknown_fields_and_replies_accept_them():
    raw = msgspec.msgpack.encode({"nr": int(Sys.FREE), "handle": 1, "extra": 2})
    with pytest.raises(msgspec.ValidationError, match="extra"):
        msgspec.msgpack.decode(raw, type=m.Free)
    newer = msgspec.msgpack.encode({"handle": 4, "future_field": True})
    assert msgspec.msgpack.decode(newer, type=m.Shared) == m.Shared(handle=4)


def test_errno_has_the_names_the_abi_promises():
    for name in ["ENOSYS", "EINVAL", "EPERM", "EBADF", "ENOMEM", "EAGAIN", "ENODEV", "EIO", "E2BIG", "EPROTO", "ETIMEDOUT"]:
        assert Errno[name].name == name
    assert Errno.EPERM == 1 and Errno.ENOSYS == 38  # Linux numbers


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_recv_frames_reads_one_whole_message_as_recv_multipart_does(parts):
    import zmq

    ctx = zmq.Context()
    try:
        pull, push = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        pull.bind("inproc://frames")
        push.connect("inproc://frames")
        push.send_multipart(parts)
        push.send_multipart([b"next"])
        assert [f.bytes for f in fr.recv_frames(pull)] == parts
        assert [f.bytes for f in fr.recv_frames(pull)] == [b"next"]  # and not a frame more
        pull.close()
        push.close()
    finally:
        ctx.term()
