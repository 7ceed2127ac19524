"""The driver conformance kit: prove a driver behaves like the built-in ones.

Subclass `DriverConformance` in a test file of the driver's package (name the
subclass Test...) and run pytest:

    from llmos.drivers.conformance import DriverConformance
    from mypkg.driver import MyDriver

    class TestMyDriver(DriverConformance):
        driver_class = MyDriver

It checks the driver class in this process (spec, round trips of every
dtype, every op against torch, tensors at offsets of shared files for a
host-visible device, freed tensors, bad requests, capacity, the time it
reports) and through a real booted kernel (the device is served,
syscalls give torch's results, a kill -9 of its driver host is survived).
docs/drivers.md describes each check and the class attributes. The kit needs
pytest (the `dev` extra of llmos).
"""

from .suite import DriverConformance

__all__ = ["DriverConformance"]
