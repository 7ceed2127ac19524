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
    """One replica's membership in its model's process group of `world` members.

    `device`: where the group's collectives run: the CPU for gloo, the
    replica's GPU for NCCL (which reduces only tensors on it).
    """

    def __init__(self, pg: dist.ProcessGroup, store: dist.Store, world: int, device: torch.device):
        self.pg = pg
        self.store = store  # kept alive with the group: rank 0's is the master the others talk to
        self.world = world
        self.device = device

    def sum(self, flat: torch.Tensor) -> None:
        """Sum a flat CPU tensor over the group, in place: every member ends with the same sum.

        GroupError when a member is gone (its connection closed) or sends nothing within the timeout.
        """
        try:
            if self.device.type == "cpu":
                self.pg.allreduce([flat]).wait()
            else:  # NCCL: through the GPU and back
                there = flat.to(self.device)
                self.pg.allreduce([there]).wait()
                flat.copy_(there.cpu())
        except RuntimeError as exc:
            raise GroupError(f"the all-reduce over {self.world} replicas failed: {exc}") from exc


BACKENDS = ("gloo", "nccl")


def join(store: dist.TCPStore | None, address: str, host: str, rank: int, world: int, prefix: str,
         timeout_s: float, backend: str = "gloo", device: torch.device | str = "cpu") -> Group:  # fmt: skip
    """Join a group as `rank` of `world` through the store at `address` ("HOST:PORT"; rank 0 passes its own
    master `store`), over `backend`: gloo, its connections listening on `host`, or NCCL on the GPU `device`;
    blocks until all have joined.

    GroupError when the backend is not there, the store cannot be reached or the others do not all join
    within `timeout_s`.
    """
    if backend not in BACKENDS:
        raise GroupError(f"unknown process-group backend {backend!r} (one of {', '.join(BACKENDS)})")
    if backend == "nccl" and not (dist.is_nccl_available() and torch.cuda.is_available()):
        raise GroupError("NCCL is not available here (this torch has no NCCL, or there is no GPU)")
    try:
        if store is None:
            addr, _, port = address.rpartition(":")
            store = dist.TCPStore(addr, int(port), None, False, timeout=_timeout(timeout_s))
        prefixed = dist.PrefixStore(prefix, store)
        if backend == "nccl":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = _timeout(timeout_s)
            torch.cuda.set_device(device)
            return Group(dist.ProcessGroupNCCL(prefixed, rank, world, options), store, world, torch.device(device))
        options = dist.ProcessGroupGloo._Options()
        options._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        options._timeout = _timeout(timeout_s)
        pg = dist.ProcessGroupGloo(prefixed, rank, world, options)
    except (RuntimeError, ValueError) as exc:
        raise GroupError(f"joining as rank {rank} of {world} through {address} failed: {exc}") from exc
    return Group(pg, store, world, torch.device("cpu"))
