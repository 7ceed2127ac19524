"""Replicated models and data-parallel train_step end to end, on several local CPU devices.

A step over replicas equals one step on the whole batch on one device (float64 models, so the sums of
shards differ from the whole only in the last bits); replicas stay identical; bad device lists are
refused; memory is charged and freed on every device; and a replica whose host dies mid-step fails
that call with EIO at once, after which the model trains on the survivors (a smaller group, then alone).
"""

import asyncio
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from llmos.syscalls import Errno
from llmos.userland import AsyncClient, Client, LlmosError
from llmos.userland.programs import train
from llmos.userland.programs.common import parse_result

from conftest import start_kernel, until

CONFIG = dict(d_model=32, n_layers=2, n_heads=2, max_len=32)
TEXT = list(range(40, 72))


def batches(n: int, rows: int, seed: int = 0) -> list[list[list[int]]]:
    """`n` seeded batches of `rows` windows of 17 token ids."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 259, (rows, 17), generator=gen).tolist() for _ in range(n)]


def load(c: Client, **where):
    """A fresh float64 tinygpt from seed 5: the same weights wherever it is built."""
    return c.model_load(arch="tinygpt", config=CONFIG, kv_blocks=8, block_size=4, dtype="float64", seed=5, **where)


def weights(c: Client, storage: str, handle: int, name: str) -> dict[str, torch.Tensor]:
    """The model's weights, through model_save (its first replica's) and safetensors."""
    c.model_save(handle, name)
    return {k: v for k, v in load_file(os.path.join(storage, name)).items() if k.startswith("model.")}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-10, msg=name)


def errno(fn, *args, **kw) -> Errno:
    with pytest.raises(LlmosError) as err:
        fn(*args, **kw)
    return err.value.errno


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dpstore"))


@pytest.fixture(scope="module")
def dpkernel(runtime_dir, storage):
    kp = start_kernel(runtime_dir, "dp", storage_dir=storage, driver_options={"cpu": {"count": 2, "threads": 1}},
                      group_timeout_s=2.0)  # fmt: skip
    yield kp
    assert kp.stop() == 0


@pytest.fixture
def dc(dpkernel):
    with Client(dpkernel.address, name="dp") as c:
        yield c


def test_the_cpu_splits_into_devices_each_with_its_own_host_and_memory_share(dc):
    devs = {d.name: d for d in dc.devices()}
    assert set(devs) == {"cpu0", "cpu1"} and devs["cpu0"].driver_os_pid != devs["cpu1"].driver_os_pid
    assert "share 2 of 2" in devs["cpu1"].description and devs["cpu1"].host_visible


def test_a_step_over_two_replicas_is_a_step_on_the_whole_batch(dc, storage):
    rep = load(dc, devices=["cpu0", "cpu1"])
    solo = load(dc, device="cpu1")
    assert rep.devices == ["cpu0", "cpu1"] and rep.device == "cpu0" and solo.devices == ["cpu1"]
    for batch in batches(3, rows=5):  # shards of 3 and 2 windows
        got, want = dc.train_step(rep.model, batch), dc.train_step(solo.model, batch)
        assert (got.replicas, got.diverged, got.step) == (2, False, want.step)
        assert got.loss == pytest.approx(want.loss, rel=1e-12)
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=1e-9)
    mine, theirs = weights(dc, storage, rep.model, "rep.safetensors"), weights(dc, storage, solo.model, "solo.safetensors")
    assert_same_weights(mine, theirs)
    assert dc.logprobs(rep.model, TEXT) == pytest.approx(dc.logprobs(solo.model, TEXT), abs=1e-10)
    assert dc.generate(rep.model, TEXT[:4], max_tokens=6).ids == dc.generate(solo.model, TEXT[:4], max_tokens=6).ids
    (one,) = batches(1, rows=1, seed=1)  # fewer windows than replicas: the second adds zeros, and still steps
    got, want = dc.train_step(rep.model, one), dc.train_step(solo.model, one)
    assert (got.replicas, got.diverged) == (2, False) and got.loss == pytest.approx(want.loss, rel=1e-12)
    for h in (rep.model, solo.model):
        dc.model_free(h)


def test_the_train_program_over_a_device_list_follows_the_one_device_loss_curve(dpkernel, tmp_path, monkeypatch,
                                                                                  capsys):  # fmt: skip
    """`llmos run train --device cpu0,cpu1` trains data parallel, with the losses of `--device cpu1` (float32)."""
    (tmp_path / "adder.py").write_text("def add(a, b):\n    return a + b\n\n" * 200)
    monkeypatch.setenv("LLMOS_KERNEL", dpkernel.address)
    results = {}
    for device in ("cpu0,cpu1", "cpu1"):
        args = ["--device", device, "--corpus", str(tmp_path), "--steps", "6", "--batch", "6", "--window", "24",
                "--d-model", "32", "--layers", "1", "--heads", "2", "--lr", "1e-2", "--warmup", "1",
                "--eval-windows", "2", "--out", f"train-{len(device)}.safetensors"]  # fmt: skip
        assert train.main(args) == 0
        out = capsys.readouterr().out
        results[device] = parse_result(out)
        assert ("on cpu0, cpu1 (data parallel)" in out) == ("," in device)
    dp, one = results["cpu0,cpu1"], results["cpu1"]
    assert dp["steps"] == one["steps"] == 6 and dp["last_loss"] < dp["first_loss"]
    for key in ("first_loss", "last_loss", "perplexity"):
        assert dp[key] == pytest.approx(one[key], rel=1e-4), key


def test_replicas_are_charged_on_every_device_and_freed_with_the_model(dc):
    def held(name: str) -> int:
        (row,) = [d for d in dc.memstat() if d.device == name]
        return row.by_process.get(dc.pid, 0)

    rep = load(dc, devices=["cpu1", "cpu0"])
    assert rep.device == "cpu1" and held("cpu0") == held("cpu1") == rep.bytes > 0
    dc.train_step(rep.model, batches(1, rows=2)[0])
    grown = held("cpu0")
    assert grown == held("cpu1") > rep.bytes  # each replica's optimizer state
    dc.model_free(rep.model)
    assert held("cpu0") == held("cpu1") == 0


def test_bad_device_lists(dc):
    assert errno(load, dc, devices=["cpu0", "cpu0"]) == Errno.EINVAL
    assert errno(load, dc, devices=["cpu", "cpu0"]) == Errno.EINVAL  # one device by two names
    assert errno(load, dc, device="cpu1", devices=["cpu0", "cpu1"]) == Errno.EINVAL
    assert errno(load, dc, devices=["cpu0", "nosuch"]) == Errno.ENODEV
    assert errno(load, dc) == Errno.EINVAL  # no device at all
    info = load(dc, device="cpu0", devices=["cpu0", "cpu1"])  # device may repeat the first
    assert info.devices == ["cpu0", "cpu1"]
    dc.model_free(info.model)
    plain = load(dc, devices=["cpu1"])  # one entry: a plain model there
    assert plain.devices == ["cpu1"] and dc.train_step(plain.model, batches(1, rows=2)[0]).replicas == 1
    dc.model_free(plain.model)
    assert all(d.by_process.get(dc.pid, 0) == 0 for d in dc.memstat())  # nothing refused was left charged


def test_a_step_waits_for_other_work_on_a_replica_device_instead_of_timing_out(dpkernel, dc):
    rep = load(dc, devices=["cpu0", "cpu1"])
    first, second = batches(2, rows=4)
    dc.train_step(rep.model, first)  # warm: the optimizers are made

    async def behind_long_matmuls():
        async with AsyncClient(dpkernel.address, name="busy") as busy:
            x = await busy.put(torch.rand(5000, 5000), device="cpu1")
            matmuls = [asyncio.ensure_future(busy.compute("matmul", x.handle, x.handle)) for _ in range(2)]
            await asyncio.sleep(0.1)  # sent: cpu1's queue holds them ahead of the step's part there
            result = await asyncio.to_thread(dc.train_step, rep.model, second)
            return result, sum(ref.wall_s for ref in await asyncio.gather(*matmuls))

    # cpu0's part holds its device unsent until cpu1's reaches the head of cpu1's queue, then both start:
    # sent at once, cpu0's would wait in the all-reduce past the 2 s timeout and fail
    result, busy_s = asyncio.run(behind_long_matmuls())
    assert (result.replicas, result.diverged) == (2, False)
    assert busy_s > 2.0  # the matmuls really did keep cpu1 busy past the group timeout
    dc.model_free(rep.model)


def test_steps_of_two_replicated_models_from_two_processes_at_once_all_succeed(dpkernel):
    async def steps():
        async with AsyncClient(dpkernel.address, name="p") as p, AsyncClient(dpkernel.address, name="q") as q:
            a = await p.model_load(arch="tinygpt", config=CONFIG, kv_blocks=4, devices=["cpu0", "cpu1"])
            b = await q.model_load(arch="tinygpt", config=CONFIG, kv_blocks=4, devices=["cpu1", "cpu0"])
            calls = [c.train_step(h.model, batch) for batch in batches(4, rows=3) for c, h in ((p, a), (q, b))]
            return await asyncio.gather(*calls)  # their collectives take turns: none waits on the other's

    results = asyncio.run(steps())
    assert [(r.replicas, r.diverged) for r in results] == [(2, False)] * 8
    assert sorted(r.step for r in results) == [1, 1, 2, 2, 3, 3, 4, 4]


def host_of(c: Client, device: str) -> int:
    return c.device(device).driver_os_pid


def online(c: Client, device: str) -> bool:
    """Whether the device is online (ENODEV / EAGAIN while its host is replaced)."""
    try:
        return c.device(device).state == "online"
    except LlmosError as exc:
        assert exc.errno in (Errno.ENODEV, Errno.EAGAIN)
        return False


def test_a_replica_host_killed_mid_step_fails_that_step_and_training_goes_on(runtime_dir, tmp_path):
    storage = str(tmp_path)
    kp = start_kernel(runtime_dir, "dpkill", storage_dir=storage, driver_options={"cpu": {"count": 3, "threads": 1}})
    try:
        with Client(kp.address, name="dpkill") as c:
            victim = host_of(c, "cpu2")
            os.kill(victim, signal.SIGSTOP)  # the others build their replicas; cpu2's never answers

            async def load_and_kill() -> LlmosError:
                loading = asyncio.ensure_future(asyncio.to_thread(load, c, devices=["cpu0", "cpu1", "cpu2"]))
                await asyncio.sleep(0.5)
                os.kill(victim, signal.SIGKILL)
                with pytest.raises(LlmosError) as err:
                    await loading
                return err.value

            assert asyncio.run(load_and_kill()).errno == Errno.EIO
            assert all(d.by_process.get(c.pid, 0) == 0 for d in c.memstat())  # the built replicas were freed
            until(lambda: online(c, "cpu2"), timeout=30)

            rep = load(c, devices=["cpu0", "cpu1", "cpu2"])
            solo = load(c, device="cpu1")
            a, b, d, e = batches(4, rows=6)
            assert c.train_step(rep.model, a).replicas == 3
            c.train_step(solo.model, a)

            victim = host_of(c, "cpu2")
            os.kill(victim, signal.SIGSTOP)  # it is sent its shard but never answers: the others wait in the all-reduce

            async def step_and_kill() -> tuple[float, LlmosError]:
                step = asyncio.ensure_future(asyncio.to_thread(c.train_step, rep.model, b))
                await asyncio.sleep(0.5)
                start = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                with pytest.raises(LlmosError) as err:
                    await step
                return time.monotonic() - start, err.value

            took, err = asyncio.run(step_and_kill())
            assert err.errno == Errno.EIO and took < 5.0, (took, err)  # cpu2's loss, or the others' all-reduce

            got, want = c.train_step(rep.model, d), c.train_step(solo.model, d)  # a new group of two: cpu0, cpu1
            assert (got.replicas, got.diverged, got.step) == (2, False, 2)
            assert got.loss == pytest.approx(want.loss, rel=1e-12)  # the failed step changed no replica
            on_cpu0 = weights(c, storage, rep.model, "cpu0.safetensors")
            assert_same_weights(on_cpu0, weights(c, storage, solo.model, "solo.safetensors"))

            os.kill(host_of(c, "cpu0"), signal.SIGKILL)  # the first replica: cpu1's serves from now on
            until(lambda: [h.device for h in c.handles() if h.handle == rep.model] == ["cpu1"])
            assert_same_weights(weights(c, storage, rep.model, "cpu1.safetensors"), on_cpu0)  # replicas were equal
            got, want = c.train_step(rep.model, e), c.train_step(solo.model, e)  # alone now: a plain step
            assert (got.replicas, got.step) == (1, 3) and got.loss == pytest.approx(want.loss, rel=1e-12)
            prompt = TEXT[:4]
            assert c.generate(rep.model, prompt, max_tokens=4).ids == c.generate(solo.model, prompt, max_tokens=4).ids
    finally:
        assert kp.stop() == 0
