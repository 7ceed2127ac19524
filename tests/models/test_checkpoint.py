"""Checkpoints: safetensors files that round-trip model, optimizer state, config and step bit for bit."""

import json

import pytest
import torch
from llmos.drivers.models import build_model
from llmos.drivers.models.checkpoint import load_checkpoint, save_checkpoint
from llmos.drivers.models.train import batches, make_optimizer, train_step
from safetensors import safe_open

CONFIG = {"d_model": 32, "n_layers": 2, "n_heads": 4, "max_len": 32, "tie_weights": False}


def trained(steps=3):
    torch.manual_seed(0)
    model = build_model("tinygpt", CONFIG)
    opt = make_optimizer(model)
    stream = batches(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(0)), 4, 32, seed=1)
    for _ in range(steps):
        train_step(model, opt, next(stream))
    return model, opt, stream


def test_round_trip_bit_for_bit(tmp_path):
    model, opt, stream = trained()
    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, model, opt, step=3, extra={"offset": 12})
    ck = load_checkpoint(path)
    assert (ck.arch, ck.config, ck.step, ck.extra) == ("tinygpt", model.config.to_dict(), 3, {"offset": 12})

    model2 = build_model(ck.arch, ck.config)
    model2.load_state_dict(ck.model_state)
    opt2 = make_optimizer(model2)
    opt2.load_state_dict(ck.optimizer_state)
    for (n1, t1), (n2, t2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert n1 == n2 and t1.dtype == t2.dtype and torch.equal(t1, t2)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["state"].keys() == s2["state"].keys() and len(s1["state"]) == len(list(model.parameters()))
    for i in s1["state"]:
        assert s1["state"][i].keys() == s2["state"][i].keys()
        for key in s1["state"][i]:
            assert torch.equal(s1["state"][i][key], s2["state"][i][key]), (i, key)
    # and training goes on identically from the restored state
    batch = next(stream)
    assert train_step(model, opt, batch) == train_step(model2, opt2, batch)
    for t1, t2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(t1, t2)


def test_file_is_plain_safetensors_with_json_header(tmp_path):
    model, _, _ = trained(1)
    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, model, None, step=7)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        assert meta["format"] == "llmos-checkpoint" and json.loads(meta["config"])["d_model"] == 32
        assert all(k.startswith("model.") for k in f.keys())  # noqa: SIM118 (safe_open is not a dict)
    ck = load_checkpoint(path)
    assert ck.optimizer_state is None and ck.step == 7
    assert list(tmp_path.iterdir()) == [tmp_path / "ck.safetensors"]  # no temporary left behind


def test_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    path = str(tmp_path / "other.safetensors")
    save_file({"x": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an llmos-checkpoint"):
        load_checkpoint(path)


def test_the_kernel_reads_the_config_from_the_header_without_torch(tmp_path):
    from llmos.drivers.models.safetensors_header import read_metadata

    model = build_model("tinygpt", CONFIG)
    path = str(tmp_path / "ck.safetensors")
    save_checkpoint(path, model)
    assert json.loads(read_metadata(path)["config"]) == model.config.to_dict()
    raw = open(path, "rb").read()
    for name, data in [("empty", b""), ("short", raw[:5]), ("cut", raw[:40]), ("garbage", b"\xff" * 64),
                       ("huge", (1 << 62).to_bytes(8, "little"))]:  # fmt: skip
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError):
            read_metadata(str(tmp_path / name))
