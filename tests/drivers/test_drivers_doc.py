"""docs/drivers.md stays true: the example files it shows, the mock TPU options, the kit's tests."""

import dataclasses
import pathlib
import re

from llmos.drivers.conformance import DriverConformance
from llmos.drivers.mocktpu.driver import TpuConfig

ROOT = pathlib.Path(__file__).parents[2]
DOC = (ROOT / "docs" / "drivers.md").read_text()


def test_the_example_files_it_shows_are_the_real_ones():
    shown = re.findall(r"```\w+\n# (examples/llmos-driver-example/\S+)\n(.*?)```", DOC, re.S)
    assert {path for path, _ in shown} == {
        f"examples/llmos-driver-example/{p}"
        for p in ("pyproject.toml", "src/llmos_driver_example/__init__.py", "src/llmos_driver_example/driver.py",
                  "tests/test_conformance.py")
    }
    for path, text in shown:
        assert text == (ROOT / path).read_text(), f"docs/drivers.md shows an old {path}"


def test_every_mocktpu_option_is_documented():
    for field in dataclasses.fields(TpuConfig):
        assert f"| `{field.name}` |" in DOC


def test_every_kit_test_is_documented():
    for name in dir(DriverConformance):
        if name.startswith("test_"):
            assert f"| `{name}` |" in DOC and f"::{name} PASSED" in DOC, name


def test_the_protocol_table_lists_every_message():
    from llmos.syscalls import driver as proto

    table = DOC.split("| message | driver method | answer |", 1)[1].split("\n\n", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)", table, re.M))
    tags = {cls.__struct_config__.tag for cls in proto.ToDriver.__subclasses__()}
    assert tags <= listed, f"docs/drivers.md's protocol table misses {sorted(tags - listed)}"
