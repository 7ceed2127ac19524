"""Sealed checkpoints: AES-GCM in authenticated chunks. The bytes on disk hold no plain tensor data, the round
trip is bit for bit, and a flipped bit, a cut, an appended or moved chunk or another key is refused."""

import os
import stat

import pytest
import torch

from llmos.drivers.models import TinyGPT, TinyGPTConfig
from llmos.drivers.models import sealed
from llmos.drivers.models.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from llmos.drivers.models.train import make_optimizer, train_step

KEY = bytes(range(32))
CHUNK = 64  # small chunks: the cases below cross chunk boundaries


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(d_model=16, n_layers=1, n_heads=2, max_len=16))
    opt = make_optimizer(model)
    train_step(model, opt, torch.randint(0, 256, (2, 9)))
    return model, opt


def test_a_sealed_checkpoint_holds_no_plain_tensor_bytes_and_round_trips_bit_for_bit(tmp_path, trained):
    model, opt = trained
    path = str(tmp_path / "ck.sealed")
    digest = save_checkpoint(path, model, opt, step=1, arch="tinygpt", key=KEY)
    raw = open(path, "rb").read()
    assert raw.startswith(sealed.MAGIC) and digest == file_sha256(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for name, tensor in model.state_dict().items():
        head = tensor.detach().contiguous().flatten()[:8].numpy().tobytes()
        assert head not in raw, name  # not one weight matrix's first 32 bytes appear
    assert b"llmos-checkpoint" not in raw and b"tinygpt" not in raw  # nor the metadata
    back = load_checkpoint(path, key=KEY)
    assert back.step == 1 and back.arch == "tinygpt"
    for name, tensor in model.state_dict().items():
        got = back.model_state[name]
        assert got.dtype == tensor.dtype and torch.equal(got.view(torch.uint8), tensor.contiguous().view(torch.uint8))
    assert back.optimizer_state is not None and torch.equal(
        back.optimizer_state["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"]
    )
    with pytest.raises(ValueError, match="sealed"):
        load_checkpoint(path)  # unreadable without the key


def sealed_file(tmp_path, data: bytes) -> str:
    path = str(tmp_path / "f")
    sealed.write(path, data, KEY, chunk=CHUNK)
    return path


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK + 5])
def test_the_chunked_format_round_trips(tmp_path, size):
    data = os.urandom(size)
    path = sealed_file(tmp_path, data)
    assert sealed.read(path, KEY) == data
    assert sealed.read_prefix(path, KEY, 10) == data[:CHUNK]  # only the first chunk is opened


def test_every_flipped_bit_is_refused(tmp_path):
    data = os.urandom(3 * CHUNK + 5)
    path = sealed_file(tmp_path, data)
    good = open(path, "rb").read()
    for pos in range(0, len(good), 7):  # header, nonces, ciphertext and tags alike
        bad = bytearray(good)
        bad[pos] ^= 1 << (pos % 8)
        open(path, "wb").write(bad)
        with pytest.raises(sealed.AuthError, match="checkpoint failed authentication"):
            sealed.read(path, KEY)


def test_cut_extended_reordered_or_foreign_files_are_refused(tmp_path):
    data = os.urandom(3 * CHUNK + 5)
    path = sealed_file(tmp_path, data)
    good = open(path, "rb").read()
    block = sealed.NONCE + CHUNK + sealed.TAG
    body = good[sealed.HEADER :]
    cases = {
        "cut mid chunk": good[:-3],
        "cut at a chunk boundary": good[: sealed.HEADER + 2 * block],
        "header only": good[: sealed.HEADER],
        "chunk appended": good + body[:block],
        "chunks swapped": good[: sealed.HEADER] + body[block : 2 * block] + body[:block] + body[2 * block :],
    }
    other = sealed_file(tmp_path / "..", data)  # the same data sealed again: another file id
    cases["chunk from another file"] = good[: sealed.HEADER] + open(other, "rb").read()[sealed.HEADER :]
    for what, content in cases.items():
        open(path, "wb").write(content)
        with pytest.raises(sealed.AuthError):
            sealed.read(path, KEY)
            pytest.fail(what)
    open(path, "wb").write(good)
    with pytest.raises(sealed.AuthError):
        sealed.read(path, bytes(32))  # another key


def test_key_files_are_made_private_and_others_readable_ones_refused(tmp_path):
    path = str(tmp_path / "storage.key")
    key = sealed.load_key(path, create=True)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sealed.load_key(path, create=True) == key  # kept: made once
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="read by others"):
        sealed.load_key(path)
    os.chmod(path, 0o600)
    open(path, "w").write("not a key")
    with pytest.raises(ValueError, match="does not hold a key"):
        sealed.load_key(path)


def test_the_kernel_reads_a_sealed_header_with_its_key_and_refuses_plain_files_when_told(tmp_path, trained):
    from types import SimpleNamespace

    from llmos.kernel.errors import SysError
    from llmos.kernel.sysmodel import _checkpoint_meta
    from llmos.syscalls import Errno

    model, _ = trained
    sealed_path, plain_path = str(tmp_path / "s"), str(tmp_path / "p")
    save_checkpoint(sealed_path, model, key=KEY)
    save_checkpoint(plain_path, model)

    def kernel(key=None, refuse_plain=False):
        return SimpleNamespace(storage_key=key, config=SimpleNamespace(refuse_plain=refuse_plain))

    meta = _checkpoint_meta(kernel(KEY), "s", sealed_path)
    assert meta["sealed"] and meta["arch"] == "tinygpt" and meta["config"]["d_model"] == 16
    assert not _checkpoint_meta(kernel(KEY), "p", plain_path)["sealed"]  # plain files still load
    cases = [(kernel(None), sealed_path, Errno.EINVAL, "no storage key"),
             (kernel(bytes(32)), sealed_path, Errno.EINVAL, "checkpoint failed authentication"),
             (kernel(KEY, refuse_plain=True), plain_path, Errno.EPERM, "refuses plain checkpoints")]  # fmt: skip
    for k, path, errno, words in cases:
        with pytest.raises(SysError) as err:
            _checkpoint_meta(k, "x", path)
        assert err.value.errno == errno and words in err.value.message
