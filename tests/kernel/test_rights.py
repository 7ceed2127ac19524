"""Rights nest: over random spawn trees, drops and calls, no process ever exercises a right that one of its
ancestors did not hold. Driven through the kernel's own check (kernel/sysrights.py) and the syscall table."""

from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos.kernel import sysrights
from llmos.kernel.errors import SysError
from llmos.kernel.proc import Process
from llmos.syscalls import Errno, rights
from llmos.syscalls import messages as m
from llmos.syscalls.table import TABLE

DEVICES = ["cpu0", "cpu1", "tpu0"]
NAMES = sorted(rights.RIGHTS) + [f"device:{d}" for d in DEVICES]
GUARDED = [row for row in TABLE if row.right or row.device_right]


@dataclass
class FakeDevice:
    name: str


@dataclass
class FakeKernel:
    """What `sysrights.check` asks of the kernel: devices by name or kind."""

    devices: dict = field(default_factory=lambda: {d: FakeDevice(d) for d in DEVICES})

    def device(self, name: str, starting: bool = False) -> FakeDevice:
        return self.devices.get(name) or self.devices[f"{name}0"]


def request(row, device: str, flag: bool) -> m.Call:
    """A request of `row`'s type naming `device`, with its `right_if` field set or not (other required fields
    filled with a value of their type)."""
    fields = {}
    for f in msgspec.structs.fields(row.request):
        if f.name == "device":
            fields["device"] = device
        elif f.name == row.right_if:
            fields[f.name] = "folder" if flag else ""
        elif f.required:
            fields[f.name] = {int: 1, str: "x", float: 1.0}.get(f.type, [])
    return row.request(**fields)


step = st.one_of(
    st.tuples(st.just("spawn"), st.integers(0, 7), st.none() | st.lists(st.sampled_from(NAMES + ["bogus"]), max_size=6)),
    st.tuples(st.just("drop"), st.integers(0, 7), st.lists(st.sampled_from(NAMES), max_size=3)),
    st.tuples(st.just("call"), st.integers(0, 7), st.tuples(st.sampled_from(GUARDED), st.sampled_from(DEVICES + ["cpu"]), st.booleans())),
)


@settings(max_examples=300)
@given(admin=st.booleans(), steps=st.lists(step, max_size=30))
def test_no_process_exercises_a_right_an_ancestor_lacked(admin, steps):
    k = FakeKernel()
    root = Process(1, "root", b"t", rights=rights.ALL if admin else rights.DEFAULT)
    procs = [root]
    parent = {1: None}
    held_at_start = {1: root.rights}  # a process's rights only shrink: what it held when it began bounds them

    def ancestors(p):
        pid = parent[p.pid]
        while pid is not None:
            yield pid
            pid = parent[pid]

    for kind, index, arg in steps:
        p = procs[index % len(procs)]
        if kind == "spawn":
            try:
                given_rights = sysrights.child_rights(p, arg)
            except SysError as exc:
                assert exc.errno in (Errno.EPERM, Errno.EINVAL)
                assert arg is not None and (not set(arg) <= set(NAMES) or any(not rights.holds(p.rights, r) for r in arg))
                continue
            child = Process(len(procs) + 1, "child", b"t", rights=given_rights)
            procs.append(child)
            parent[child.pid] = p.pid
            held_at_start[child.pid] = child.rights
            for pid in ancestors(child):  # what it may ever exercise is bounded by every ancestor's
                assert all(rights.holds(held_at_start[pid], r) for r in child.rights), pid
        elif kind == "drop":
            before = p.rights
            p.rights = rights.drop(p.rights, arg, list(k.devices))
            assert all(rights.holds(before, r) for r in p.rights)  # never regains one
            assert not any(r in p.rights for r in arg)
        else:
            row, device, flag = arg
            req = request(row, device, flag)
            try:
                sysrights.check(k, p, row, req)
            except SysError as exc:
                assert exc.errno == Errno.EPERM and "lacks the right" in exc.message
                continue
            needed = []
            if row.right and (not row.right_if or flag):
                needed.append(row.right)
            if row.device_right:
                needed.append("device:" + k.device(device).name)
            for right in needed:
                for pid in [p.pid, *ancestors(p)]:
                    assert rights.holds(held_at_start[pid], right), (right, pid)


def test_a_right_is_checked_by_name():
    p = Process(1, "p", b"t", rights=rights.DEFAULT - {"spawn"})
    spawn = next(row for row in TABLE if row.name == "spawn")
    with pytest.raises(SysError) as err:
        sysrights.check(FakeKernel(), p, spawn, m.Spawn(program="x"))
    assert err.value.errno == Errno.EPERM and "'spawn'" in err.value.message
    with pytest.raises(SysError) as err:
        sysrights.child_rights(p, ["spawn"])
    assert err.value.errno == Errno.EPERM and "'spawn'" in err.value.message
    with pytest.raises(SysError) as err:
        sysrights.child_rights(p, ["root"])
    assert err.value.errno == Errno.EINVAL


def test_dropping_one_device_under_the_wildcard_keeps_the_others():
    kept = rights.drop(rights.DEFAULT, ["device:cpu1"], DEVICES)
    assert rights.ANY_DEVICE not in kept and {"device:cpu0", "device:tpu0"} <= kept and "device:cpu1" not in kept
