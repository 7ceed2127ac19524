"""The conformance kit catches broken drivers: each check fails on a driver that breaks its rule."""

import os
import pathlib

import pytest
import torch
from testdrivers import (
    ClaimsSimulated,
    DropsParams,
    GoodDriver,
    IgnoresOffset,
    IgnoresWrites,
    KeepsFreed,
    KeepsMappings,
    NoCapacity,
    ReportsTimeButReal,
    RunsUndeclaredOps,
    SecretlyBfloat16,
    SharedGood,
    TakesAnyDtype,
    Unlimited,
    WrongSub,
)

from llmos.drivers.conformance import checks, kernelchecks
from llmos.userland import Client


BROKEN = [
    (WrongSub, checks.check_ops, "sub("),
    (DropsParams, checks.check_ops, "softmax("),
    (SecretlyBfloat16, checks.check_ops, "max abs error"),
    (Unlimited, checks.check_capacity, "no error, expected DriverError(ENOMEM)"),
    (KeepsFreed, checks.check_freed_tensor_is_gone, "read of a freed tensor: no error"),
    (RunsUndeclaredOps, checks.check_bad_requests, "which the device does not declare: no error"),
    (TakesAnyDtype, checks.check_bad_requests, "alloc of bfloat16, which the device does not declare"),
    (ClaimsSimulated, checks.check_reported_time, "simulated seconds"),
    (ReportsTimeButReal, checks.check_reported_time, "a real device returns 0.0"),
    (IgnoresWrites, checks.check_round_trip, "read back"),
    (IgnoresOffset, checks.check_shared_files, "on tensors at offsets"),
    (KeepsMappings, checks.check_shared_files, "still maps the removed file"),
]


def good_twin(cls):
    """The good driver a broken one departs from: host-visible or not."""
    return SharedGood if issubclass(cls, SharedGood) else GoodDriver


def run_check(cls, check, shm_dir):
    h = checks.Harness(cls(0, {"shm_dir": str(shm_dir)}))
    try:
        if check in (checks.check_ops, checks.check_shared_files):
            check(h, {})
        else:
            check(h)
    finally:
        h.close()


@pytest.mark.parametrize(("cls", "check"), sorted({(good_twin(cls), c) for cls, c, _ in BROKEN},
                                                  key=lambda pair: (pair[0].__name__, pair[1].__name__)))
def test_a_good_driver_passes(cls, check, tmp_path):
    run_check(cls, check, tmp_path)
    assert os.listdir(tmp_path) == []  # every file the kit placed tensors in is gone


@pytest.mark.parametrize(("cls", "check", "says"), BROKEN, ids=[cls.__name__ for cls, _, _ in BROKEN])
def test_a_broken_driver_fails(cls, check, says, tmp_path):
    with pytest.raises(AssertionError, match=None) as err:
        run_check(cls, check, tmp_path)
    assert says in str(err.value)


def test_the_kit_places_a_host_visible_drivers_tensors_side_by_side_in_one_file(tmp_path):
    h = checks.Harness(SharedGood(0, {"shm_dir": str(tmp_path)}))
    descs = [h.put(torch.full((3, n), float(n))) for n in (1, 5, 40)]
    offsets = {d.offset for d in descs}
    assert len({d.shm for d in descs}) == 1 and len(offsets) == 3 and 0 not in offsets
    assert not h.driver.tensors  # never asked to allocate
    assert [h.get(d)[0, 0].item() for d in descs] == [1.0, 5.0, 40.0]
    h.free(*descs)
    assert os.listdir(tmp_path) == []
    h.close()


def test_a_bad_spec_fails():
    with pytest.raises(AssertionError, match="capacity_bytes is 0"):
        checks.check_spec(NoCapacity, {}, NoCapacity(0).spec())
    checks.check_spec(GoodDriver, {}, GoodDriver(0).spec())


def test_bfloat16_compute_passes_when_declared():
    checks.check_ops(checks.Harness(SecretlyBfloat16(0)), {"float32": "bfloat16", "float64": "bfloat16",
                                                          "float16": "bfloat16"})


def test_the_kernel_checks_catch_a_wrong_result(runtime_dir):
    with pytest.MonkeyPatch.context() as mp:
        here = str(pathlib.Path(__file__).parent)
        mp.setenv("PYTHONPATH", os.pathsep.join([here, os.environ["PYTHONPATH"]]))  # for the kernel's processes
        with kernelchecks.booted("wrongsub", {}, plugin="testdrivers") as kp, Client(kp.address) as c:
            spec = GoodDriver(0).spec()
            kernelchecks.check_device(c, "wrongsub0", spec)
            with pytest.raises(AssertionError) as err:
                kernelchecks.check_ops(c, "wrongsub0", spec, {})
    assert "sub(" in str(err.value) and "add(" not in str(err.value)


def test_a_driver_without_pieces_still_serves_whole_reads_and_writes(runtime_dir):
    """The clients ask for a first piece of every read; a driver without read_at (older, or minimal) must not
    see it as a piece when it is the whole tensor."""
    with pytest.MonkeyPatch.context() as mp:
        here = str(pathlib.Path(__file__).parent)
        mp.setenv("PYTHONPATH", os.pathsep.join([here, os.environ["PYTHONPATH"]]))  # for the kernel's processes
        with kernelchecks.booted("wholeonly", {}, plugin="testdrivers") as kp, Client(kp.address) as c:
            x = torch.arange(1000, dtype=torch.float32)
            ref = c.put(x, "wholeonly0")
            torch.testing.assert_close(c.read(ref.handle), x)
