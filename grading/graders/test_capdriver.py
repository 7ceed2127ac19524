"""Grader of assignment 3: `assignments.capdriver.CapDriver` passes the driver conformance kit.

The kit's in-process tests make the driver directly; its kernel tests boot a
kernel that loads the driver through assignments/plugin.py (LLMOS_PLUGINS)
and kill its driver host once. `GRADE_QUICK=1` (the test suite's check of the
graders) leaves the kernel tests out.
"""

import os

import pytest

from llmos.drivers.conformance import DriverConformance

capdriver = pytest.importorskip("assignments.capdriver",
                                reason="assignments/capdriver.py is missing: restore it from git")


def test_the_driver_declares_its_capacity(tmp_path):
    """The first thing to do: spec() declares the capacity the option sets."""
    driver = capdriver.CapDriver(0, {"capacity_bytes": 1 << 20, "shm_dir": str(tmp_path)})
    try:
        spec = driver.spec()
        assert spec.capacity_bytes == 1 << 20 and not spec.host_visible and spec.ops
    finally:
        driver.close()


class TestCapDriver(DriverConformance):
    """The conformance kit of docs/drivers.md, on CapDriver."""

    driver_class = capdriver.CapDriver
    capacity_options = {"capacity_bytes": 1 << 20}
    plugin = "assignments.plugin"

    @pytest.fixture(autouse=True)
    def written(self, request, tmp_path):
        """Fail at once, with the reason, while the driver is not written; skip the kernel tests when quick."""
        if os.environ.get("GRADE_QUICK") and "kernel" in request.node.name:
            pytest.skip("GRADE_QUICK: the kit's kernel tests are left out")
        try:
            test_the_driver_declares_its_capacity(tmp_path)
        except NotImplementedError as exc:
            pytest.fail(str(exc))
