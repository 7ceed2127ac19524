"""The syscalls a console reads the system through: trace_read, another process's handles,
memstat's block picture, and sched_get's queue in order."""

import asyncio
import threading

import pytest
import torch

from llmos.syscalls import Errno
from llmos.userland import AsyncClient, Client, LlmosError

from conftest import occupy_device

TINY = dict(d_model=32, n_layers=1, n_heads=2, max_len=64)


def test_trace_read_gives_device_work_in_order_and_only_what_is_new(kernel, client):
    start = client.trace_read().next
    model = client.model_load("cpu", "tinygpt", config=TINY)
    try:
        client.generate(model.model, "abc", max_tokens=4)
        log = client.trace_read(start)
        assert log.next > start and log.lost == 0
        assert [e.seq for e in log.events] == list(range(start, log.next))
        steps = [e for e in log.events if e.event == "device.busy" and e.fields.get("work") == "model_step"]
        assert steps and all(e.fields["device"] == "cpu0" and client.pid in e.fields["pids"] for e in steps)
        assert any(e.event == "device.idle" for e in log.events)
        assert all(e.t <= log.now for e in log.events)
        assert client.trace_read(log.next).events == []  # nothing new since
    finally:
        client.model_free(model.model)
    with pytest.raises(LlmosError) as err:
        client.trace_read(-1)
    assert err.value.errno == Errno.EINVAL


def test_handles_of_another_process_are_listed_as_metadata(kernel, client):
    with Client(kernel.address, name="holder") as other:
        ref = other.put(torch.ones(8, 4))
        (row,) = [h for h in client.handles(other.pid) if h.handle == ref.handle]
        assert row.kind == "tensor" and row.shape == [8, 4] and row.nbytes == 128 and row.charged == other.pid
        assert [h.handle for h in other.handles()] == [h.handle for h in client.handles(other.pid)]
        with pytest.raises(LlmosError) as err:
            client.read(ref.handle)  # seeing it is not holding it
        assert err.value.errno == Errno.EBADF
        gone = other.pid
    with pytest.raises(LlmosError) as err:
        client.handles(gone)
    assert err.value.errno == Errno.ESRCH


def test_memstat_blocks_draws_each_block_with_its_owner_and_sharing(kernel, client):
    pool = client.kv_pool("cpu", layers=1, kv_heads=1, head_dim=4, blocks=8)
    seq = client.kv_alloc("cpu", pool.pool, 40)  # 3 blocks of 16
    client.kv_fork(seq.seq)  # all 3 shared
    with Client(kernel.address, name="second") as other:
        mine = other.kv_alloc("cpu", pool.pool, 10)
        (row,) = [p for d in client.memstat(blocks=True) for p in d.kv_pools if p.pool == pool.pool]
        assert len(row.owners) == len(row.marks) == 8
        for block in seq.table:
            assert row.owners[block] == client.pid and row.marks[block] == "s"
        (theirs,) = mine.table
        assert row.owners[theirs] == other.pid and row.marks[theirs] == "u"
        assert row.marks.count(".") == 4 and row.owners.count(0) == 4
        (plain,) = [p for d in client.memstat() for p in d.kv_pools if p.pool == pool.pool]
        assert plain.owners == [] and plain.marks == ""  # the picture only when asked for


def test_sched_get_lists_who_waits_in_the_device_queue(kernel, client):
    async def crowd():
        """Queue three ops behind a long matmul and ask sched_get until they show (a new round if the device won)."""
        async with AsyncClient(kernel.address, name="crowd") as a:
            x = await a.put(torch.ones(4, 4))
            for _ in range(5):
                busy = await occupy_device(a, size=1500)
                waiting = [asyncio.ensure_future(a.compute("add", x.handle, x.handle)) for _ in range(3)]
                seen = None
                while seen is None and not busy.done():
                    info = await asyncio.to_thread(client.sched, "cpu")
                    if any(e.pid == a.pid for e in info.queue):
                        seen = info
                await busy
                await asyncio.gather(*waiting)
                if seen is not None:
                    return a.pid, seen
            raise AssertionError("the ops never showed in the queue behind the matmul")

    pid, info = asyncio.run(crowd())
    assert info.policy in info.policies
    entries = [e for e in info.queue if e.pid == pid]
    assert len(entries) == 1 and entries[0].work == "op" and 1 <= entries[0].items <= 3
    assert info.queued >= entries[0].items


def test_sched_get_lists_a_models_generate_sequences(kernel, client):
    model = client.model_load("cpu", "tinygpt", config=TINY)
    try:
        (mid,) = [m.model for d in client.memstat() for m in d.models if m.charged == client.pid]  # the kernel's id
        with Client(kernel.address, name="writer") as w:
            theirs = client.share(model.model, w.pid)
            found = []
            for _ in range(5):  # a few generations, in case one ends between two looks
                writer = threading.Thread(target=w.generate, args=(theirs, "abc"), kwargs={"max_tokens": 40})
                writer.start()
                while writer.is_alive() and not found:
                    found = [e for e in client.sched("cpu0").queue if e.pid == w.pid]
                writer.join()
                if found:
                    break
    finally:
        client.model_free(model.model)
    (entry,) = found
    assert entry.work == "generate" and entry.model == mid and entry.state in ("running", "waiting")
