"""Package layout: each top-level folder of the repository is `llmos.<folder>`.

Metadata lives in pyproject.toml; this file only maps folders to packages, which
pyproject.toml cannot do for subpackages without listing each one by hand.
`llmos` itself is an implicit namespace package with no folder of its own.
"""

from setuptools import find_packages, setup

TOP_LEVEL = ("syscalls", "kernel", "services", "drivers", "userland", "benchmarks", "testing")

packages = []
for top in TOP_LEVEL:
    packages.append(f"llmos.{top}")
    packages += [f"llmos.{top}.{sub}" for sub in find_packages(top)]

setup(
    packages=packages,
    package_dir={f"llmos.{top}": top for top in TOP_LEVEL},
    package_data={"llmos.userland.web": ["static/*"]},  # `llmos web`'s page, script and style sheet
)
