"""Process groups of driver hosts: the gloo group a replicated model's replicas all-reduce over.

Each replicated model gets its own group, never torch.distributed's global
default group: a host may hold replicas of several models, and a model's
group is built again over the surviving replicas when one is lost. So a
group is a `ProcessGroupGloo` made straight from a store, with no
`init_process_group`.

The rendezvous has two phases, because only the host that owns the store
can pick its free port: `open_store` makes the master `TCPStore` on port 0
in rank 0's host (without waiting for anyone) and the kernel hands its
"HOST:PORT" to every replica's host; `join` then connects to it (rank 0
uses its own store) and builds the group under a `PrefixStore` named after
the model and the group's generation, so a rebuilt group never reads the
keys of an earlier one. `join` blocks until every rank has joined. Every
wait (connecting, joining, each all-reduce) ends after the group's timeout.
"""

import datetime

import torch
import torch.distributed as dist


class GroupError(Exception):
    """A group could not be formed or an all-reduce failed: a member died, hung or never came (timeout)."""


def _timeout(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


def open_store(host: str, timeout_s: float) -> dist.TCPStore:
    """The master store of a new group, listening on a free port of `host` (its `.port`); returns at once."""
    try:
        return dist.TCPStore(host, 0, None, True, timeout=_timeout(timeout_s), wait_for_workers=False)
    except RuntimeError as exc:
        raise GroupError(f"cannot open a rendezvous store on {host}: {exc}") from exc


class Group:
    """One replica's membership in its model's process group of `world` members."""

    def __init__(self, pg: dist.ProcessGroup, store: dist.Store, world: int):
        self.pg = pg
        self.store = store  # kept alive with the group: rank 0's is the master the others talk to
        self.world = world

    def sum(self, flat: torch.Tensor) -> None:
        """Sum a flat CPU tensor over the group, in place: every member ends with the same sum.

        GroupError when a member is gone (its connection closed) or sends nothing within the timeout.
        """
        try:
            self.pg.allreduce([flat]).wait()
        except RuntimeError as exc:
            raise GroupError(f"the all-reduce over {self.world} replicas failed: {exc}") from exc


def join(store: dist.TCPStore | None, address: str, host: str, rank: int, world: int, prefix: str,
         timeout_s: float) -> Group:  # fmt: skip
    """Join a group as `rank` of `world` through the store at `address` ("HOST:PORT"; rank 0 passes its own
    master `store`), its gloo connections listening on `host`; blocks until all have joined.

    GroupError when the store cannot be reached or the others do not all join within `timeout_s`.
    """
    try:
        if store is None:
            addr, _, port = address.rpartition(":")
            store = dist.TCPStore(addr, int(port), None, False, timeout=_timeout(timeout_s))
        options = dist.ProcessGroupGloo._Options()
        options._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        options._timeout = _timeout(timeout_s)
        pg = dist.ProcessGroupGloo(dist.PrefixStore(prefix, store), rank, world, options)
    except (RuntimeError, ValueError) as exc:
        raise GroupError(f"joining as rank {rank} of {world} through {address} failed: {exc}") from exc
    return Group(pg, store, world)
