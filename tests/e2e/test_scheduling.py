"""The kernel orders real device work with the chosen policy, switchable at run time."""

import asyncio

import pytest
import torch

from llmos.syscalls import Errno
from llmos.userland import AsyncClient, LlmosError


def test_sched_get_set_and_bad_policy(client):
    info = client.sched("cpu")
    assert info.device == "cpu0" and info.policy == "fcfs" and {"fcfs", "rr", "priority", "mlfq", "vtc"} <= set(info.policies)
    try:
        assert client.sched_set("cpu0", "vtc").policy == "vtc"
        assert client.sched("cpu0").policy == "vtc"
        with pytest.raises(LlmosError) as err:
            client.sched_set("cpu0", "lottery")
        assert err.value.errno == Errno.EINVAL and "vtc" in err.value.message
    finally:
        client.sched_set("cpu0", "fcfs")


async def completion_order(address: str, heavy_ops: int = 60, light_ops: int = 4) -> list[str]:
    """A heavy process floods the device, then a light one arrives; who finishes when."""
    order: list[str] = []
    async with (
        AsyncClient(address, name="heavy") as heavy,
        AsyncClient(address, name="light") as light,
        AsyncClient(address, name="watch") as watch,
    ):
        x = await heavy.put(torch.randn(300, 300))
        y = await light.put(torch.randn(300, 300))
        big = await heavy.put(torch.randn(2000, 2000))

        async def op(c, h, who):
            await c.compute("matmul", h, h)
            order.append(who)

        # a long op first (~50 ms on one core) keeps the device busy while the flood queues up
        # behind it, and the flood itself is some 60 ms of work, so the light process arrives while
        # the heavy stream is still long even when this test process is descheduled for a while
        flood = [asyncio.create_task(heavy.compute("matmul", big.handle, big.handle))]
        flood += [asyncio.create_task(op(heavy, x.handle, "heavy")) for _ in range(heavy_ops)]
        # the light process sends only once the kernel holds the whole flood (queued, or done):
        # the kernel reads its clients' sockets in turn, so on a loaded machine a fixed sleep
        # could let light requests in among unread heavy ones
        deadline = asyncio.get_running_loop().time() + 10
        while (await watch.sched("cpu0")).queued + len(order) < heavy_ops - 1:
            assert asyncio.get_running_loop().time() < deadline, "the flood never reached the queue"
            await asyncio.sleep(0.001)
        late = [asyncio.create_task(op(light, y.handle, "light")) for _ in range(light_ops)]
        await asyncio.gather(*flood, *late)
    return order


@pytest.mark.parametrize("policy", ["fcfs", "vtc"])
def test_policy_orders_device_work_between_processes(client, kernel, policy):
    client.sched_set("cpu0", policy)
    try:
        order = asyncio.run(completion_order(kernel.address))
    finally:
        client.sched_set("cpu0", "fcfs")
    last_light = max(i for i, who in enumerate(order) if who == "light")
    heavy_after = len(order) - 1 - last_light
    if policy == "fcfs":
        assert heavy_after <= 1, order  # the light process waits behind the whole flood
    else:
        assert heavy_after >= 30, order  # vtc: served by turns as soon as it arrives, early in the flood
