"""Every syscall end to end through a booted kernel, with both clients."""

import asyncio

import pytest
import torch

from llmos.syscalls import Errno
from llmos.userland import AsyncClient, Client, LlmosError


def test_null_getpid_stat(client):
    assert client.null() is not None
    me = client.getpid()
    assert me.pid == client.pid and me.name == "test" and me.ppid == 0
    stat = client.stat()
    assert stat.abi == 1 and stat.by_syscall["null"] >= 1 and stat.devices == 1 and stat.uptime_s > 0


def test_devices_and_info(client):
    (cpu,) = client.devices()
    assert cpu.name == "cpu0" and cpu.state == "online" and cpu.host_visible
    assert cpu.capacity_bytes > 1 << 20 and "matmul" in cpu.ops and "bfloat16" in cpu.dtypes
    assert client.device("cpu").name == "cpu0"  # a kind names its first device
    assert client.device("auto").name == "cpu0"  # the only device, so the best one
    ref = client.alloc("auto", [2])
    assert ref.device == "cpu0"
    client.free(ref.handle)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool, torch.float16])
def test_write_read_round_trip(client, dtype):
    x = (torch.randn(3, 5) * 10).to(dtype)
    ref = client.put(x, "cpu0")
    assert (ref.shape, ref.dtype, ref.nbytes) == ([3, 5], str(dtype)[6:], x.numel() * x.element_size())
    assert torch.equal(client.read(ref.handle), x)
    client.free(ref.handle)


def test_empty_and_scalar_tensors(client):
    for x in (torch.empty(0, 4), torch.tensor(3.5)):
        ref = client.put(x)
        assert torch.equal(client.read(ref.handle), x)
        client.free(ref.handle)


@pytest.mark.parametrize(
    "op, inputs, params, expected",
    [
        ("matmul", 2, {}, lambda a, b: a @ b),
        ("add", 2, {}, lambda a, b: a + b),
        ("mul", 2, {}, lambda a, b: a * b),
        ("sub", 2, {}, lambda a, b: a - b),
        ("softmax", 1, {"dim": 0}, lambda a: torch.softmax(a, 0)),
        ("layer_norm", 1, {"eps": 1e-6}, lambda a: torch.nn.functional.layer_norm(a, (4,), eps=1e-6)),
        ("gelu", 1, {"approximate": "tanh"}, lambda a: torch.nn.functional.gelu(a, approximate="tanh")),
        ("relu", 1, {}, torch.relu),
    ],
)
def test_every_op_matches_torch(client, op, inputs, params, expected):
    xs = [torch.randn(4, 4) for _ in range(inputs)]
    handles = [client.put(x).handle for x in xs]
    out = client.compute(op, *handles, **params)
    assert out.shape == [4, 4]
    torch.testing.assert_close(client.read(out.handle), expected(*xs))


def test_layer_norm_with_weight_and_bias(client):
    x, w, b = torch.randn(2, 8), torch.randn(8), torch.randn(8)
    out = client.compute("layer_norm", *(client.put(t).handle for t in (x, w, b)))
    torch.testing.assert_close(client.read(out.handle), torch.nn.functional.layer_norm(x, (8,), w, b))


def test_compute_into_out_and_in_place(client):
    a, b = torch.randn(3, 3), torch.randn(3, 3)
    ha, hb = client.put(a).handle, client.put(b).handle
    out = client.alloc("cpu", [3, 3])
    assert client.compute("add", ha, hb, out=out.handle).handle == out.handle
    torch.testing.assert_close(client.read(out.handle), a + b)
    client.compute("mul", ha, hb, out=ha)  # out aliases an input
    torch.testing.assert_close(client.read(ha), a * b)
    with pytest.raises(LlmosError) as err:
        client.compute("matmul", ha, client.put(torch.randn(3, 2)).handle, out=out.handle)
    assert err.value.errno == Errno.EINVAL and "gives float32 [3, 2]" in err.value.message


def test_share_gives_the_other_process_the_same_tensor(kernel, client):
    x = torch.arange(6.0)
    ref = client.put(x)
    with Client(kernel.address, name="other") as other:
        theirs = client.share(ref.handle, other.pid)
        assert torch.equal(other.read(theirs), x)
        client.free(ref.handle)  # the tensor lives on while the other holds it
        assert torch.equal(other.read(theirs), x)
        with pytest.raises(LlmosError) as err:
            client.read(ref.handle)
        assert err.value.errno == Errno.EBADF


def test_memory_is_charged_and_returned(client):
    before = client.device("cpu0").used_bytes
    ref = client.alloc("cpu0", [1024, 1024], "float32")
    assert client.device("cpu0").used_bytes == before + (4 << 20)
    assert [p for p in client.ps() if p.pid == client.pid][0].mem_bytes == 4 << 20
    client.free(ref.handle)
    assert client.device("cpu0").used_bytes == before


def test_ps_counts_every_kind_of_handle(client):
    def handles():
        return [p for p in client.ps() if p.pid == client.pid][0].handles

    before = handles()
    ref = client.alloc("cpu0", [4], "float32")
    pool = client.kv_pool("cpu", layers=1, kv_heads=1, head_dim=4, blocks=4)
    seq = client.kv_alloc("cpu", pool.pool, 3)
    model = client.model_load("cpu", "tinygpt", config=dict(d_model=16, n_layers=1, n_heads=2, max_len=16), kv_blocks=2)
    assert handles() == before + 3  # a tensor, a KV sequence and a model
    client.model_free(model.model)
    client.kv_free(seq.seq)
    client.free(ref.handle)
    assert handles() == before


def test_prog_list_names_the_kernels_programs(client):
    programs = {p.name: p for p in client.programs()}
    assert {"hold", "echo", "matmul", "chat"} <= set(programs)  # the test plugin's and the built-in ones
    assert programs["chat"].interactive and not programs["echo"].interactive and programs["echo"].help


def test_ps_spawn_wait_follow(client):
    child = client.spawn("echo", ["5", "hello"])
    assert any(p.pid == child.pid and p.ppid == client.pid for p in client.ps())
    chunks = []
    exited = client.wait(child.pid, on_output=chunks.append)
    assert exited.status == 5 and exited.reason == "exited with status 5"
    assert "".join(chunks) == "5 hello\n"
    assert all(p.pid != child.pid for p in client.ps())  # waited for: gone from the table
    with pytest.raises(LlmosError) as err:
        client.wait(child.pid)
    assert err.value.errno == Errno.ESRCH


def test_wait_timeout_and_kill(client):
    child = client.spawn("hold", ["1"])
    with pytest.raises(LlmosError) as err:
        client.wait(child.pid, timeout_s=0.2)
    assert err.value.errno == Errno.ETIMEDOUT
    client.kill(child.pid, 9)
    exited = client.wait(child.pid)
    assert exited.status == -9 and "signal 9" in exited.reason


def test_spawn_unknown_program(client):
    with pytest.raises(LlmosError) as err:
        client.spawn("no-such-program")
    assert err.value.errno == Errno.EINVAL and "echo" in err.value.message


def test_yield_moves_nothing_when_nothing_is_queued(client):
    assert client.yield_().requeued == 0


def test_async_client_runs_calls_concurrently(kernel):
    async def main():
        async with AsyncClient(kernel.address, name="async") as c:
            xs = [torch.randn(8, 8) for _ in range(4)]
            refs = await asyncio.gather(*(c.put(x) for x in xs))
            outs = await asyncio.gather(*(c.compute("matmul", r.handle, r.handle) for r in refs))
            results = await asyncio.gather(*(c.read(o.handle) for o in outs))
            for x, got in zip(xs, results):
                torch.testing.assert_close(got, x @ x)
            assert (await c.getpid()).pid == c.pid
            with pytest.raises(LlmosError) as err:
                await c.free(9999)
            assert err.value.errno == Errno.EBADF
            child = await c.spawn("echo", ["hi"])
            seen = []
            exited = await c.wait(child.pid, on_output=seen.append)
            assert exited.status == 0 and "".join(seen) == "hi\n"
            return c.pid

    pid = asyncio.run(main())
    with Client(kernel.address) as c:
        assert all(p.pid != pid for p in c.ps())  # the async client exited cleanly


def test_compute_reports_device_time_and_devices_add_it_up(client):
    x = client.put(torch.randn(64, 64))
    before = client.device("cpu0").busy_s
    out = client.compute("matmul", x.handle, x.handle)
    assert out.wall_s > 0 and out.sim_s == 0  # a real device: no simulated time
    assert client.device("cpu0").busy_s >= before + out.wall_s
