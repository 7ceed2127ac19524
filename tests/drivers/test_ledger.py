"""The byte ledger a driver that allocates enforces its capacity with (drivers/ledger.py), on its own and in a
driver (the mock TPU keeps one, as the CUDA driver does): tensors, models, optimizer state, compression."""

import pytest

from llmos.drivers.base import DriverError
from llmos.drivers.ledger import MemoryLedger
from llmos.syscalls.driver import OPTIMIZER_COPIES
from llmos.drivers.mocktpu.driver import MockTpuDriver
from llmos.syscalls import Errno
from llmos.syscalls.driver import TensorDesc

CONFIG = dict(d_model=16, n_layers=1, n_heads=2, max_len=16)
TARGET = "llmos.drivers.models:tinygpt_architecture"


def errno_of(call) -> Errno:
    """The errno of the DriverError `call` raises."""
    with pytest.raises(DriverError) as err:
        call()
    return err.value.errno


def test_charges_add_up_and_a_refused_one_changes_nothing():
    ledger = MemoryLedger(100, "GPU memory")
    ledger.charge("a", 60)
    with pytest.raises(DriverError) as err:
        ledger.charge("b", 41, "tensor b")
    assert err.value.errno == Errno.ENOMEM and "tensor b: 41 bytes do not fit in GPU memory" in err.value.message
    assert ledger.used == 60 and ledger.held == {"a": 60}
    ledger.charge("b", 40)  # exactly full
    assert errno_of(lambda: ledger.grow("a", 1)) == Errno.ENOMEM and ledger.holding("a") == 60
    assert ledger.release("a") == 60 and ledger.used == 40
    ledger.grow("b", 50)
    assert ledger.holding("b") == 90 and ledger.used == 90


def test_bad_charges_are_refused():
    ledger = MemoryLedger(10)
    ledger.charge("a", 1)
    assert errno_of(lambda: ledger.charge("a", 1)) == Errno.EINVAL  # charged already
    assert errno_of(lambda: ledger.grow("nobody", 1)) == Errno.EINVAL
    assert ledger.release("nobody") == 0 and ledger.used == 1
    with pytest.raises(ValueError):
        ledger.charge("b", -1)
    with pytest.raises(ValueError):
        MemoryLedger(-1)
    ledger.clear()
    assert ledger.used == 0 and ledger.held == {}


def test_a_driver_charges_tensors_and_models_and_releases_them():
    d = MockTpuDriver(0, {"hbm_bytes": 1 << 20})
    d.alloc(TensorDesc(1, [100], "float32"))
    desc = d.model_load(1, TARGET, CONFIG, "float32", "", kv_blocks=4, block_size=4, seed=3)
    model_bytes = desc.param_bytes + desc.kv_bytes  # what the kernel charges for it
    assert d.ledger.held == {("tensor", 1): 400, ("model", 1): model_bytes}
    bad = [[1, 2, 3, 10**6]]  # a token past the vocabulary: the step fails after the charge
    assert errno_of(lambda: d.model_train_step(1, bad, lr=1e-3, weight_decay=0.0, clip=1.0)) == Errno.EINVAL
    d.model_train_step(1, [[1, 2, 3, 4]] * 2, lr=1e-3, weight_decay=0.0, clip=1.0)
    assert d.ledger.holding(("model", 1)) == model_bytes + OPTIMIZER_COPIES * desc.param_bytes  # charged once
    d.model_train_step(1, [[1, 2, 3, 4]] * 2, lr=1e-3, weight_decay=0.0, clip=1.0)
    assert d.ledger.holding(("model", 1)) == model_bytes + OPTIMIZER_COPIES * desc.param_bytes
    d.free(1)
    d.model_free(1)
    assert d.ledger.used == 0 and d.ledger.held == {}


def test_a_model_past_the_capacity_is_enomem_and_leaves_nothing():
    d = MockTpuDriver(0, {"hbm_bytes": 8192})
    err = errno_of(lambda: d.model_load(1, TARGET, CONFIG, "float32", "", kv_blocks=4, block_size=4, seed=3))
    assert err == Errno.ENOMEM and d.models == {} and d.ledger.used == 0
    d.alloc(TensorDesc(1, [2048], "float32"))  # the whole capacity is still there
    assert d.ledger.used == 8192


def test_compression_recharges_the_model_at_what_it_holds():
    d = MockTpuDriver(0, {"hbm_bytes": 4 << 20})
    desc = d.model_load(1, TARGET, {**CONFIG, "d_model": 64}, "float32", "", kv_blocks=4, block_size=4, seed=3)
    d.model_train_step(1, [[1, 2, 3, 4]], lr=1e-3, weight_decay=0.0, clip=1.0)
    out = d.model_quantize(1, "int8", 0, [[1, 2, 3, 4, 5]])
    assert out.bytes_after < desc.param_bytes
    assert d.ledger.held == {("model", 1): out.bytes_after + desc.kv_bytes}  # the optimizer state went too
