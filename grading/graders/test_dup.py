"""Grader of assignment 1: the `dup` syscall, end to end.

`dup(handle)` opens a second handle, in the caller's own table, on the tensor
behind `handle`, like Unix dup(2): the tensor lives until both are freed.
Checked: the number (appended, never reusing one), the message and the table
row, the client method, the docs' rows (docs/abi.md's table and
docs/api-client.md's, by the docs' own tests), and the behaviour through a
booted kernel, bad handles included.
"""

import importlib.util
import pathlib

import msgspec
import pytest
import torch

from llmos.syscalls import Errno, Sys
from llmos.syscalls import messages as m
from llmos.syscalls.table import BY_NR, TABLE
from llmos.userland import Client, LlmosError


def docs_test(name: str):
    """One of the tree's docs tests (tests/docs/NAME.py), loaded by path."""
    path = pathlib.Path(__file__).parents[2] / "tests" / "docs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"grade_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dup_has_a_number_and_a_table_row():
    """The first thing to do: Sys.DUP, after every number in use, and a row in the syscall table."""
    assert hasattr(Sys, "DUP"), "assignment 1 is not done: no syscall number Sys.DUP in syscalls/numbers.py"
    assert int(Sys.DUP) == max(int(s) for s in Sys), "Sys.DUP must be a new number after all the others"
    row = BY_NR.get(int(Sys.DUP))
    assert row is not None, "no row for Sys.DUP in syscalls/table.py's TABLE"
    assert row.family == "memory" and row.reply is m.TensorRef
    assert [f.name for f in msgspec.structs.fields(row.request)] == ["handle"]


def test_the_docs_list_it():
    """docs/abi.md's syscall table and docs/api-client.md's method table have their rows (their tests pass)."""
    test_dup_has_a_number_and_a_table_row()
    test_abi_doc, test_site = docs_test("test_abi_doc"), docs_test("test_site")
    test_abi_doc.test_syscall_table_matches_the_code()
    test_site.test_the_client_page_maps_every_syscall_to_its_method()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One kernel for the behaviour tests (the cpu device only)."""
    from llmos.kernel import boot
    from llmos.kernel.config import KernelConfig

    test_dup_has_a_number_and_a_table_row()  # no kernel to boot before there is a syscall to call
    runtime_dir = tmp_path_factory.mktemp("rt")
    kp = boot.start(KernelConfig(name="grade-dup", runtime_dir=str(runtime_dir), drivers=["cpu"],
                                 log_level="warning"))
    yield kp
    kp.stop()


@pytest.fixture
def client(kernel):
    with Client(kernel.address, name="grader") as c:
        yield c


def test_dup_opens_a_second_handle_on_the_same_tensor(client):
    assert callable(getattr(client, "dup", None)), "no method dup(handle) in userland/api.py's SyscallApi"
    used = client.device("cpu0").used_bytes
    ref = client.put(torch.arange(8, dtype=torch.float32), "cpu")
    twin = client.dup(ref.handle)
    assert twin.handle != ref.handle and twin.shape == [8] and twin.dtype == "float32"
    assert client.device("cpu0").used_bytes == used + 32, "dup must not copy the tensor"
    client.write(ref.handle, torch.ones(8))
    assert torch.equal(client.read(twin.handle), torch.ones(8)), "both handles name one tensor"
    client.free(ref.handle)
    assert torch.equal(client.read(twin.handle), torch.ones(8)), "the tensor lives while a handle is open"
    client.free(twin.handle)
    assert client.device("cpu0").used_bytes == used, "freeing the last handle frees the tensor"


def test_dup_of_a_bad_handle_is_ebadf(client, kernel):
    with pytest.raises(LlmosError) as err:
        client.dup(12345)
    assert err.value.errno == Errno.EBADF
    ref = client.put(torch.zeros(4), "cpu")
    with Client(kernel.address, name="other") as other:
        with pytest.raises(LlmosError) as err:
            other.dup(ref.handle)  # a handle means nothing in another process
        assert err.value.errno == Errno.EBADF
    client.free(ref.handle)


def test_every_syscall_still_has_its_row():
    assert [int(s.nr) for s in TABLE] == sorted(int(s.nr) for s in TABLE)
