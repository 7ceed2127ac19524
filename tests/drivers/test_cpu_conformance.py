"""The built-in CPU driver passes the conformance kit."""

from llmos.drivers.conformance import DriverConformance
from llmos.drivers.cpu.driver import CpuDriver


class TestCpuDriver(DriverConformance):
    driver_class = CpuDriver
    capacity_options = {"capacity_bytes": 1 << 20}
