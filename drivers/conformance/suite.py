"""`DriverConformance`: the kit as a pytest class to subclass in a driver package's tests.

    from llmos.drivers.conformance import DriverConformance
    from mypkg.driver import MyDriver

    class TestMyDriver(DriverConformance):
        driver_class = MyDriver
        capacity_options = {"capacity_bytes": 1 << 20}  # options that make the device small

pytest collects the `test_*` methods below in the subclass (name it Test...).
The in-process tests make a fresh driver for device 0 each; the kernel tests
share one booted kernel per class, and the restart test kills its driver host
once. A class is skipped, with the reason, where `driver_class.count()` finds
no device on this machine.
"""

from typing import ClassVar

import pytest

from llmos.userland import Client

from ..base import Driver
from . import checks, kernelchecks


class DriverConformance:
    """Subclass with the driver under test; every test_* method checks one part of the driver contract."""

    driver_class: ClassVar[type[Driver]]  # the driver under test (required)
    options: ClassVar[dict] = {}  # driver options, as in KernelConfig.driver_options[kind]
    capacity_options: ClassVar[dict | None] = None  # options that shrink the device so the kit can fill it; None: skip
    computes_in: ClassVar[dict[str, str]] = {}  # storage dtype -> the lower precision the device computes it in
    plugin: ClassVar[str] = ""  # module providing the driver, for LLMOS_PLUGINS; "": the installed entry point

    @classmethod
    def device_name(cls) -> str:
        """The name of the device under test in the kernel: the kind's first device."""
        return f"{cls.driver_class.kind}0"

    @classmethod
    def require_device(cls) -> None:
        """Skip the test where this machine has no device of the kind."""
        if cls.driver_class.count(dict(cls.options)) == 0:
            pytest.skip(f"no {cls.driver_class.kind} device on this machine ({cls.driver_class.__name__}.count() is 0)")

    def make_harness(self, shm_dir, extra: dict | None = None) -> checks.Harness:
        """A fresh driver for device 0, with the options the kernel would pass (`shm_dir` included)."""
        self.require_device()
        return checks.Harness(self.driver_class(0, {**self.options, **(extra or {}), "shm_dir": str(shm_dir)}))

    @pytest.fixture
    def harness(self, tmp_path):
        """The driver under test, closed after the test."""
        h = self.make_harness(tmp_path)
        yield h
        h.close()

    @pytest.fixture(scope="class")
    @classmethod
    def conformance_kernel(cls):
        """One kernel per class, serving only the driver under test."""
        cls.require_device()
        with kernelchecks.booted(cls.driver_class.kind, cls.options, cls.plugin) as kp:
            yield kp

    @pytest.fixture
    def conformance_client(self, conformance_kernel):
        """A client attached to the class's kernel."""
        with Client(conformance_kernel.address, name="conformance") as c:
            yield c

    # ---- the driver class, in this process -------------------------------------------------

    def test_spec(self, harness):
        """The spec the host would send in Hello is well formed."""
        checks.check_spec(self.driver_class, dict(self.options), harness.spec)

    def test_round_trip_of_every_dtype(self, harness):
        """Bytes written read back unchanged, in every declared dtype."""
        checks.check_round_trip(harness)

    def test_pieces_round_trip(self, harness):
        """A tensor written and read in pieces reads back unchanged (or the driver refuses pieces with EINVAL)."""
        checks.check_pieces(harness)

    def test_every_op_agrees_with_torch(self, harness):
        """Every declared op and dtype agrees with torch within tolerance."""
        checks.check_ops(harness, self.computes_in)

    def test_out_may_be_an_input(self, harness):
        """An op may write into one of its inputs."""
        checks.check_out_aliases_input(harness, self.computes_in)

    def test_tensors_in_shared_files(self, harness):
        """Host-visible: tensors at offsets of shared files compute right, and forget unmaps a file."""
        checks.check_shared_files(harness, self.computes_in)

    def test_freed_tensor_is_gone(self, harness):
        """A freed tensor is EINVAL for every use (devices that allocate)."""
        checks.check_freed_tensor_is_gone(harness)

    def test_bad_requests_fail_cleanly(self, harness):
        """Bad requests raise DriverError(EINVAL) and the device goes on."""
        checks.check_bad_requests(harness)

    def test_capacity_is_enforced(self, tmp_path):
        """The driver enforces its capacity with ENOMEM (devices that allocate; the kernel enforces a
        host-visible device's)."""
        if self.capacity_options is None:
            pytest.skip(f"{type(self).__name__} sets no capacity_options to make the device small enough to fill")
        h = self.make_harness(tmp_path, self.capacity_options)
        try:
            if h.spec.host_visible:
                pytest.skip("the kernel's memory service enforces a host-visible device's capacity")
            checks.check_capacity(h)
        finally:
            h.close()

    def test_reported_time(self, harness):
        """Simulated seconds from run_op: 0.0 when real, growing with the op when simulated."""
        checks.check_reported_time(harness)

    # ---- through a booted kernel ------------------------------------------------------------

    def test_kernel_serves_the_device(self, conformance_client, harness):
        """A booted kernel lists the device online as the driver declares it."""
        kernelchecks.check_device(conformance_client, self.device_name(), harness.spec)

    def test_kernel_ops_agree_with_torch(self, conformance_client, harness):
        """Through syscalls, round trips and ops agree with torch."""
        kernelchecks.check_ops(conformance_client, self.device_name(), harness.spec, self.computes_in)

    def test_kernel_restarts_a_killed_driver_host(self, conformance_client, harness):
        """kill -9 of the host: the device returns, old tensors are EIO, new work runs."""
        kernelchecks.check_restart(conformance_client, self.device_name(), harness.spec, self.computes_in)
