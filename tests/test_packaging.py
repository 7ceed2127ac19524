"""A normal (non-editable) install has every package and the console script."""

import pathlib
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).parents[1]


@pytest.mark.slow
def test_wheel_installs_and_imports_without_the_source_tree(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("llmos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for top in ("syscalls", "kernel", "services", "drivers", "userland", "benchmarks", "testing"):
        assert f"llmos/{top}/__init__.py" in names
    for module in ("drivers/cpu/driver.py", "drivers/mocktpu/driver.py", "drivers/conformance/suite.py", "userland/examples/matmul.py",
                   "userland/web/static/index.html", "userland/web/static/console.js", "userland/web/static/console.css"):
        assert f"llmos/{module}" in names
    assert not any(n.startswith(("tests/", "llmos/__init__.py")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "llmos = llmos.userland.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    deps = sysconfig.get_paths()["purelib"]  # torch, msgspec... without the editable install's path hook
    code = (
        "import llmos.kernel.kernel, llmos.drivers.cpu.driver, llmos.userland.cli.main as cli;"
        "print(cli.__file__); cli.build_parser()"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": f"{target}:{deps}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().startswith(str(target))
