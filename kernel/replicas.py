"""Replicated models: one model on several devices, trained data parallel (docs/distributed.md).

`model_load(devices=[...])` builds one replica per device, all from the
same source, each charged in full (`sysmodel.sys_model_load`, through a
`Gang`); `load_devices` checks the list. The first replica serves
generate, logprobs and model_save. When a replica's device goes offline
the model goes on with the others (`lose_on`).

`train_step` on a replicated model runs in the kernel's `CollectiveLine`
(one collective at a time):

1. If the model has no process group over its present replicas, one is
   formed: `group_open` on rank 0's host opens the rendezvous store on a
   free port, then every replica's host `group_join`s it at once (a
   together `Gang`), each listening on its own node's address.
2. The batch is cut into contiguous shards, one per replica, as equal as
   possible (the first `B % n` replicas get one window more; with fewer
   windows than replicas the last ones get none, add zero gradients and
   still step, so every replica takes the same step).
3. Every replica gets its shard in one grouped `DTrainStep` (a together
   `Gang`): it computes its shard's loss scaled by its share of the batch,
   all-reduces gradients and loss in one flat bucket, clips by the global
   norm and steps AdamW, so all end with the same weights. The call is
   answered once all have answered, with the whole batch's loss and norm;
   the replicas' weight digests must agree (`TrainResult.diverged`).

A part that fails (its host died: EIO from the supervisor; the others'
all-reduce then fails within the group timeout) fails the call at once,
and the group is marked broken; the next train_step forms a new one over
the surviving replicas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m

from . import sysmodel
from .devices import LOCAL_NODE, ONLINE, Device, Work
from .errors import SysError
from .gang import Answer, Gang

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .sysmodel import Model

_store_decoder = msgspec.msgpack.Decoder(proto.GroupStore)


def load_devices(k: Kernel, req: m.ModelLoad) -> list[Device]:
    """The devices a model_load builds on: `device`, or one replica on each of `devices`.

    EINVAL for a device named twice (`cpu` and `cpu0` are one device), for
    a `device` other than the first of `devices`, or for no device at all;
    ENODEV / EAGAIN for a device that is not online, as for one device.
    """
    if not req.devices and not req.device:
        raise SysError(Errno.EINVAL, "name a device (device) or the devices of a replicated model (devices)")
    devs = [k.device(name) for name in req.devices or [req.device]]
    names = [dev.name for dev in devs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SysError(Errno.EINVAL, f"devices names {', '.join(twice)} more than once: one replica per device")
    if req.devices and req.device and k.device(req.device) is not devs[0]:
        raise SysError(Errno.EINVAL, f"device {req.device!r} is not the first of devices {list(req.devices)}: "
                                     "give one of them, or device \"\"")  # fmt: skip
    return devs


def lose_on(k: Kernel, model: Model, name: str, message: str) -> None:
    """Device `name` went offline: `model` loses its replica there, or, when that was its only one, is lost
    (its handles answer EIO until freed, its generate calls fail).

    A replicated model goes on with the others: its process group is broken
    (the next train_step forms another), and when the lost replica was the
    first, its generate calls fail with EIO and the next replica serves from
    fresh KV books.
    """
    if name not in model.devices:
        return
    if len(model.devices) == 1:
        model.lost = message
        model.batcher.pump()  # generations in progress fail now
        return
    first = model.device == name
    model.devices.remove(name)
    model.group = ()
    k.log.warning("model.replica_lost", model=model.mid, device=name, replicas=list(model.devices), reason=message)
    if first:
        model.batcher.fail_all(Errno.EIO, f"the replica serving generate was lost: {message}")
        sysmodel.new_books(k, model)


def backend_for(kinds: list[str]) -> str:
    """The backend of a group over devices of these driver kinds: NCCL when every one is a CUDA device, else gloo."""
    return "nccl" if kinds and all(kind == "cuda" for kind in kinds) else "gloo"


def shards(tokens: list[list[int]], n: int) -> list[list[list[int]]]:
    """`tokens` cut into `n` contiguous shards, as equal as possible (the first ones one window more; some
    empty when there are fewer windows than shards)."""
    base, extra = divmod(len(tokens), n)
    out, at = [], 0
    for i in range(n):
        size = base + (i < extra)
        out.append(tokens[at : at + size])
        at += size
    return out


def train_step(k: Kernel, c: CallCtx, model: Model) -> None:
    """One data-parallel step of a replicated model on the caller's batch (see the module docstring)."""
    k.collectives.enter(lambda leave: _run_step(k, c, model, leave))


def _run_step(k: Kernel, c: CallCtx, model: Model, leave) -> None:
    """The step's turn in the collective line: form the group if needed, then step; `leave` when over.

    A caller that left while its step waited has it skipped; a model freed meanwhile is EBADF.
    """
    if c.proc.state == "exited" or model.freed:
        c.fail(Errno.EBADF, "the model was freed before its step ran")
        return leave()
    for name in list(model.devices):  # a device going offline right now, whose loss is not recorded yet
        dev = k.devices.get(name)
        if dev is None or dev.state != ONLINE:
            lose_on(k, model, name, f"device {name} went offline: {dev.offline_reason if dev else 'unloaded'}")
    if model.lost:
        c.fail(Errno.EIO, f"model lost, {model.lost}")
        return leave()

    def failed(errno: Errno, message: str) -> None:
        model.group = ()
        c.fail(errno, message)
        leave()

    if model.group == tuple(model.devices):
        return _step(k, c, model, leave)
    _form_group(k, c.proc.pid, model, lambda: _step(k, c, model, leave), failed)


def _form_group(k: Kernel, pid: int, model: Model, then, failed) -> None:
    """The two-phase rendezvous of a new process group over the model's replicas; `then()` once all joined."""
    devs = [k.devices[name] for name in model.devices]
    model.groups += 1
    prefix = f"llmos/model{model.mid}/group{model.groups}"
    timeout = k.config.group_timeout_s
    first = devs[0]
    local = next((dev.kernel_address for dev in devs if dev.node and dev.kernel_address), LOCAL_NODE)
    backend = backend_for([dev.kind for dev in devs])

    def joined(answers: list[Answer]) -> None:
        bad = next((a for a in answers if a.errno is not None), None)
        if bad is not None:
            return failed(bad.errno, f"forming the process group of {len(devs)} replicas: {bad.device}: {bad.message}")
        model.group = tuple(dev.name for dev in devs)
        k.log.info("model.group", model=model.mid, replicas=list(model.group), prefix=prefix)
        then()

    def opened(ok: proto.DOk, frames) -> None:
        store = first.node_address(_store_decoder.decode(frames[0].buffer).port, local)
        parts = [
            (dev, proto.DGroupJoin(seq=dev.next_seq(), model=model.mid, rank=rank, world=len(devs), store=store,
                                   host=dev.node_address(local=local), prefix=prefix, timeout_s=timeout,
                                   backend=backend))
            for rank, dev in enumerate(devs)
        ]  # fmt: skip
        Gang(k, pid, parts, joined, together=True).submit()

    msg = proto.DGroupOpen(seq=first.next_seq(), model=model.mid, host=first.node_address(local=local), timeout_s=timeout)
    k.submit(first, Work(owner=pid, msg=msg, done=opened, fail=failed))


def _step(k: Kernel, c: CallCtx, model: Model, leave) -> None:
    """Every replica's grouped step on its shard, at once; the call is answered once all have answered."""
    req: m.TrainStep = c.req
    devs = [k.devices[name] for name in model.devices]
    parts = [
        (dev, proto.DTrainStep(seq=dev.next_seq(), model=model.mid, tokens=shard, lr=req.lr,
                               weight_decay=req.weight_decay, clip=req.clip, total=len(req.tokens), grouped=True))
        for dev, shard in zip(devs, shards(req.tokens, len(devs)))
    ]  # fmt: skip

    def failed(answer: Answer) -> None:  # at once, before the others answer
        model.group = ()
        c.fail(answer.errno, f"data-parallel step of {len(devs)} replicas: {answer.device}: {answer.message}")

    def done(answers: list[Answer]) -> None:
        if all(a.errno is None for a in answers):
            outs = [sysmodel.train_out(a.frames) for a in answers]
            diverged = len({out.digest for out in outs}) > 1
            if diverged:
                k.log.error("model.replicas_diverged", model=model.mid, digests=[out.digest for out in outs])
            model.step = outs[0].step
            c.reply(m.TrainResult(loss=outs[0].loss, grad_norm=outs[0].grad_norm, step=outs[0].step,
                                  device_s=max(a.ok.wall_s for a in answers), replicas=len(devs),
                                  diverged=diverged))  # fmt: skip
        leave()

    Gang(k, c.proc.pid, parts, done, failed, together=True).submit()
