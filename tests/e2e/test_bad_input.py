"""Bad input gets the right typed error, and the kernel keeps serving everyone else."""

import msgspec
import pytest
import torch
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos.syscalls import ABI_VERSION, Errno, Sys
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m
from llmos.userland import Client, LlmosError


@pytest.fixture(scope="module")
def raw(kernel):
    """A bare DEALER socket: send any frames, get the kernel's reply frames."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(kernel.address)

    def call(frames: list[bytes]) -> tuple[fr.ReplyIn, list]:
        sock.send_multipart(frames)
        assert sock.poll(10_000), "the kernel did not answer"
        reply_frames = sock.recv_multipart()
        return fr.reply_decoder.decode(reply_frames[0]), reply_frames[1:]

    yield call
    sock.close()
    ctx.term()


def error_of(reply: fr.ReplyIn) -> tuple[Errno, str]:
    assert reply.kind == fr.ERROR
    err = fr.error_decoder.decode(reply.body)
    return Errno(err.errno), err.message


def envelope(call: dict, token: bytes = b"", rid: int = 5, abi: int = ABI_VERSION) -> bytes:
    return msgspec.msgpack.encode([abi, rid, token, call])


def test_malformed_frames_are_eproto(raw):
    for frames in ([b"\xc1garbage"], [b""], [msgspec.msgpack.encode({"not": "an envelope"})]):
        reply, _ = raw(frames)
        assert error_of(reply)[0] == Errno.EPROTO and reply.rid == 0


def test_wrong_abi_version_is_eproto(raw):
    reply, _ = raw([envelope({"nr": 0}, abi=99)])
    errno, message = error_of(reply)
    assert errno == Errno.EPROTO and "version 99" in message and reply.rid == 5


def test_unknown_syscall_is_enosys(raw):
    reply, _ = raw([envelope({"nr": 4242})])
    errno, message = error_of(reply)
    assert errno == Errno.ENOSYS and "4242" in message and reply.rid == 5


def test_wrong_field_types_are_einval(raw, client):
    reply, _ = raw([envelope({"nr": int(Sys.ALLOC), "device": 5, "shape": "big"}, client.token)])
    errno, message = error_of(reply)
    assert errno == Errno.EINVAL and "alloc" in message
    reply, _ = raw([envelope({"nr": int(Sys.FREE), "handle": 1, "surprise": True}, client.token)])
    assert error_of(reply)[0] == Errno.EINVAL


def test_oversized_frames_are_e2big(raw, client, kernel):
    reply, _ = raw([b"\x00" * (fr.MAX_HEADER_BYTES + 1)])
    assert error_of(reply)[0] == Errno.E2BIG
    head = fr.encode_call(9, client.token, m.Write(handle=1))
    reply, _ = raw([head, b"\x00" * (kernel.config.max_bulk_bytes + 1)])
    assert error_of(reply)[0] == Errno.E2BIG and reply.rid == 9


def test_wrong_bulk_frame_count_is_eproto(raw, client):
    reply, _ = raw([fr.encode_call(3, client.token, m.Null()), b"extra"])
    assert error_of(reply)[0] == Errno.EPROTO
    reply, _ = raw([fr.encode_call(3, client.token, m.Write(handle=1))])
    assert error_of(reply)[0] == Errno.EPROTO


def test_forged_and_stale_tokens_are_eperm(raw, kernel):
    reply, _ = raw([fr.encode_call(1, b"f" * 16, m.Null())])
    errno, message = error_of(reply)
    assert errno == Errno.EPERM and "unknown token" in message
    c = Client(kernel.address, name="shortlived")
    token, pid = c.token, c.pid
    c.close()
    reply, _ = raw([fr.encode_call(2, token, m.Null())])
    errno, message = error_of(reply)
    assert errno == Errno.EPERM and "stale" in message and f"process {pid}" in message


def test_wrong_write_size_is_einval(client):
    ref = client.alloc("cpu", [4])
    with pytest.raises(LlmosError) as err:
        client.write(ref.handle, torch.zeros(5))
    assert err.value.errno == Errno.EINVAL and "16 bytes" in err.value.message


def test_bad_alloc_arguments(client):
    cases = [
        (dict(device="cpu", shape=[2], dtype="float33"), Errno.EINVAL),
        (dict(device="cpu", shape=[-1]), Errno.EINVAL),
        (dict(device="gpu9", shape=[2]), Errno.ENODEV),
        (dict(device="cpu", shape=[1 << 40, 1 << 20]), Errno.ENOMEM),
    ]
    for kwargs, errno in cases:
        with pytest.raises(LlmosError) as err:
            client.alloc(**kwargs)
        assert err.value.errno == errno, kwargs


def test_handles_lists_the_callers_own_unless_asked_for_another_pid(raw, kernel, client):
    for bad in ({"pid": "1"}, {"pid": 1.5}, {"who": 1}):  # a pid is an int; nothing else is asked for
        reply, _ = raw([envelope({"nr": int(Sys.HANDLES), **bad}, client.token)])
        errno, message = error_of(reply)
        assert errno == Errno.EINVAL and "handles" in message
    with Client(kernel.address, name="other") as other:
        other.put(torch.ones(3))
        assert client.handles() == []  # the other's tensor is not listed here
        assert [row.kind for row in other.handles()] == ["tensor"]
        assert [row.kind for row in client.handles(other.pid)] == ["tensor"]  # only when asked for by pid
    with pytest.raises(LlmosError) as err:
        client.handles(-1)
    assert err.value.errno == Errno.ESRCH


def test_another_process_handle_and_use_after_free_are_ebadf(kernel, client):
    with Client(kernel.address, name="owner") as owner:
        theirs = [owner.alloc("cpu", [2]).handle for _ in range(50)][-1]
        assert theirs not in range(1, client.alloc("cpu", [1]).handle + 1)
        with pytest.raises(LlmosError) as err:
            client.read(theirs)  # a number that is only open in the other process
        assert err.value.errno == Errno.EBADF
        owner.free(theirs)
        with pytest.raises(LlmosError) as err:
            owner.read(theirs)
        assert err.value.errno == Errno.EBADF
        with pytest.raises(LlmosError) as err:
            owner.free(theirs)
        assert err.value.errno == Errno.EBADF


def test_bad_compute_calls_are_einval(client):
    a = client.put(torch.randn(2, 3)).handle
    b = client.put(torch.randn(2, 3)).handle
    for args, kwargs in [(("matmul", a, b), {}), (("softmax", a), {"dim": 7}), (("nope", a), {}), (("add",), {})]:
        with pytest.raises(LlmosError) as err:
            client.compute(*args, **kwargs)
        assert err.value.errno == Errno.EINVAL, args


frames_strategy = st.lists(st.binary(max_size=64), min_size=1, max_size=3)
call_maps = st.dictionaries(
    st.sampled_from(["nr", "handle", "shape", "device", "op", "inputs", "pid", "x"]),
    st.one_of(st.integers(-5, 40), st.text(max_size=5), st.lists(st.integers(-2, 3), max_size=3), st.none()),
    max_size=5,
)


@settings(max_examples=150)
@given(garbage=st.one_of(frames_strategy, call_maps.map(lambda c: [envelope(c)])))
def test_garbage_always_gets_a_typed_error(raw, garbage):
    reply, _ = raw(garbage)
    if reply.kind == fr.FINAL:  # the one call that needs no token: a well-formed attach
        assert msgspec.msgpack.decode(garbage[0])[3]["nr"] == int(Sys.ATTACH)
        return
    errno, message = error_of(reply)
    assert errno in {Errno.EPROTO, Errno.ENOSYS, Errno.EINVAL, Errno.EPERM, Errno.E2BIG} and message


@settings(max_examples=100)
@given(call=call_maps)
def test_garbage_calls_with_a_valid_token(raw, call):
    attached, _ = raw([fr.encode_call(1, b"", m.Attach(name="fuzz"))])
    token = msgspec.msgpack.decode(attached.body, type=m.Attached).token
    reply, _ = raw([envelope(call, token)])
    if reply.kind == fr.ERROR:
        errno, message = error_of(reply)
        assert message
    raw([fr.encode_call(2, token, m.Exit())])


def test_the_kernel_still_serves_after_all_that(client):
    assert client.null() is not None
    assert client.stat().errors > 0


@pytest.mark.parametrize("address", ["mykernel", "http://localhost:80", "tcp://", "ipc:/x"])
def test_a_client_given_something_that_is_no_kernel_address_says_so(address, monkeypatch):
    """A kernel name or a URL where an address belongs is EINVAL naming where it came from, not a ZeroMQ trace."""
    with pytest.raises(LlmosError) as err:
        Client(address, name="lost")
    assert err.value.errno == Errno.EINVAL and repr(address) in err.value.message
    monkeypatch.setenv("LLMOS_KERNEL", address)
    with pytest.raises(LlmosError) as err:
        Client(name="lost")
    assert err.value.errno == Errno.EINVAL and "$LLMOS_KERNEL" in err.value.message
