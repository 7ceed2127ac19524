"""The example driver package installs like any third-party package and passes the conformance kit.

It is pip-installed (no dependencies, no build isolation) into a folder of
its own; kernels find it through its `llmos` entry point on PYTHONPATH, never
through LLMOS_PLUGINS.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from llmos.drivers.conformance import kernelchecks
from llmos.userland import Client

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "llmos-driver-example"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> pathlib.Path:
    """The example package installed into a fresh folder, from a copy (the build leaves files behind)."""
    tmp = tmp_path_factory.mktemp("example")
    src = tmp / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(src)],
        check=True,
        capture_output=True,
    )
    return target


def env_with(site: pathlib.Path) -> dict:
    """This environment with `site` on PYTHONPATH and no LLMOS_PLUGINS: only entry points add plugins."""
    env = {k: v for k, v in os.environ.items() if k != "LLMOS_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def test_a_kernel_finds_it_by_its_entry_point(installed):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", env_with(installed)["PYTHONPATH"])  # the kernel and its driver hosts inherit it
        mp.delenv("LLMOS_PLUGINS")
        mp.syspath_prepend(str(installed))  # for the kit's check that a plugin provides the kind
        with kernelchecks.booted("exampledev", {"capacity_bytes": 1 << 20}) as kp, Client(kp.address) as c:
            (dev,) = c.devices()
            assert (dev.name, dev.state, dev.capacity_bytes) == ("exampledev0", "online", 1 << 20)
            assert not dev.host_visible
            x = torch.randn(8, 8)
            out = c.compute("matmul", c.put(x, "exampledev").handle, c.put(x, "exampledev").handle)
            torch.testing.assert_close(c.read(out.handle), x @ x)


def test_its_own_tests_pass_the_conformance_kit(installed):
    tests = installed.parent / "src" / "tests"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", str(tests)],
        cwd=tests.parent,
        env=env_with(installed),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for check in ("test_every_op_agrees_with_torch", "test_capacity_is_enforced",
                  "test_kernel_restarts_a_killed_driver_host"):
        assert f"TestArenaDriver::{check} PASSED" in run.stdout, run.stdout
    assert "SKIPPED" not in run.stdout, run.stdout
    where = "import importlib.util as u; print(u.find_spec('llmos_driver_example').origin)"
    origin = subprocess.run([sys.executable, "-c", where], cwd=tests.parent, env=env_with(installed),
                            capture_output=True, text=True, check=True).stdout
    assert origin.startswith(str(installed))  # the kit tested the installed package, not the source tree
