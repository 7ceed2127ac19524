"""Replicas of one model in several drivers form a gloo group; a grouped step over shards equals one step
on the whole batch, and a group that cannot form or loses a member fails with EIO within its timeout."""

import threading
import time

import pytest
import torch

from llmos.drivers.base import DriverError
from llmos.drivers.cpu.driver import CpuDriver
from llmos.syscalls import Errno

CONFIG = dict(d_model=16, n_layers=1, n_heads=2, max_len=16)
TARGET = "llmos.drivers.models:tinygpt_architecture"


def drivers(n: int, tmp_path) -> list[CpuDriver]:
    """`n` CPU drivers, each holding model 1 built from the same seed (float64, so sums are exact enough)."""
    out = []
    for i in range(n):
        d = CpuDriver(i, {"shm_dir": str(tmp_path)})
        d.model_load(1, TARGET, CONFIG, "float64", "", kv_blocks=2, block_size=4, seed=3)
        out.append(d)
    return out


def together(*calls):
    """Run the calls at once, one thread each (as the replicas' hosts do); their results or exceptions."""
    results = [None] * len(calls)

    def run(i, call):
        try:
            results[i] = call()
        except DriverError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def form(replicas: list[CpuDriver], prefix: str = "g1", timeout_s: float = 5.0) -> None:
    port = replicas[0].group_open(1, "127.0.0.1", timeout_s)
    world = len(replicas)
    joined = together(*(lambda r=r, d=d: d.group_join(1, r, world, f"127.0.0.1:{port}", "127.0.0.1", prefix, timeout_s)
                        for r, d in enumerate(replicas)))  # fmt: skip
    assert joined == [None] * world


def test_a_grouped_step_over_shards_is_one_step_on_the_whole_batch(tmp_path):
    (alone,) = drivers(1, tmp_path)
    replicas = drivers(3, tmp_path)
    form(replicas)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        batch = torch.randint(0, 259, (5, 9), generator=gen).tolist()
        want = alone.model_train_step(1, batch, 1e-2, 0.01, 1.0)
        shards = [batch[:2], batch[2:4], batch[4:]]
        outs = together(*(lambda d=d, s=s: d.model_train_step(1, s, 1e-2, 0.01, 1.0, total=5, grouped=True)
                          for d, s in zip(replicas, shards)))  # fmt: skip
        assert len({o.digest for o in outs}) == 1 and outs[0].digest  # bit-identical replicas
        assert {o.step for o in outs} == {want.step}
        for o in outs:
            assert o.loss == pytest.approx(want.loss, rel=1e-12) and o.grad_norm == pytest.approx(want.grad_norm, rel=1e-9)
        for p, q in zip(alone.model(1).model.parameters(), replicas[1].model(1).model.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_a_replica_with_an_empty_shard_still_steps_with_the_others(tmp_path):
    (alone,) = drivers(1, tmp_path)
    replicas = drivers(2, tmp_path)
    form(replicas)
    batch = [list(range(1, 10))]
    want = alone.model_train_step(1, batch, 1e-2, 0.01, 1.0)
    outs = together(*(lambda d=d, s=s: d.model_train_step(1, s, 1e-2, 0.01, 1.0, total=1, grouped=True)
                      for d, s in zip(replicas, [batch, []])))  # fmt: skip
    assert outs[0].digest == outs[1].digest and outs[1].loss == pytest.approx(want.loss, rel=1e-12)


def test_grouped_steps_need_a_group_and_a_sane_total(tmp_path):
    (d,) = drivers(1, tmp_path)
    for kwargs in ({}, {"total": 0}):
        with pytest.raises(DriverError) as err:
            d.model_train_step(1, [[1, 2, 3]], 1e-2, 0.0, 1.0, grouped=True, **kwargs)
        assert err.value.errno == Errno.EINVAL
    with pytest.raises(DriverError) as err:
        d.group_join(1, 0, 2, "127.0.0.1:1", "127.0.0.1", "g", 1.0)  # rank 0 without group_open
    assert err.value.errno == Errno.EINVAL


def test_a_member_that_never_joins_fails_the_join_at_the_timeout(tmp_path):
    (d,) = drivers(1, tmp_path)
    port = d.group_open(1, "127.0.0.1", 1.0)
    start = time.monotonic()
    with pytest.raises(DriverError) as err:
        d.group_join(1, 0, 2, f"127.0.0.1:{port}", "127.0.0.1", "g", 1.0)
    assert err.value.errno == Errno.EIO and time.monotonic() - start < 5.0


def test_an_all_reduce_without_the_others_fails_with_eio_at_the_timeout(tmp_path):
    replicas = drivers(2, tmp_path)
    form(replicas, timeout_s=1.0)
    start = time.monotonic()
    with pytest.raises(DriverError) as err:
        replicas[0].model_train_step(1, [[1, 2, 3]], 1e-2, 0.0, 1.0, total=2, grouped=True)  # rank 1 never steps
    assert err.value.errno == Errno.EIO and 0.9 < time.monotonic() - start < 5.0


def test_the_backend_is_nccl_only_when_every_replica_is_a_cuda_device():
    from llmos.kernel.replicas import backend_for

    assert backend_for(["cuda", "cuda"]) == "nccl"
    assert backend_for(["cuda", "cpu"]) == backend_for(["cpu", "cpu"]) == backend_for(["mocktpu"]) == "gloo"


def test_an_unknown_or_missing_backend_is_a_group_error_before_any_connection():
    from llmos.drivers.group import GroupError, join

    with pytest.raises(GroupError, match="unknown process-group backend 'mpi'"):
        join(None, "127.0.0.1:1", "127.0.0.1", 0, 2, "p", 1.0, backend="mpi")
    if not torch.cuda.is_available():
        with pytest.raises(GroupError, match="NCCL is not available"):
            join(None, "127.0.0.1:1", "127.0.0.1", 0, 2, "p", 1.0, backend="nccl")
