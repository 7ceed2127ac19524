"""Protection end to end, on one kernel booted with --encrypt-storage: rights refuse what a process lacks
(and spawn hands on no more), refusals land in the audit trail, `llmos audit verify` names an edited line,
and checkpoints are sealed on disk, load back bit for bit, and fail authentication when changed."""

import hashlib
import json
import os
import shutil

import pytest

from llmos.drivers.models import sealed
from llmos.drivers.models.checkpoint import load_checkpoint
from llmos.syscalls import Errno, rights, runtime
from llmos.syscalls import auditlog
from llmos.userland import Client, LlmosError
from llmos.userland.cli.main import main

from conftest import start_kernel, until

NAME = "prot"
CONFIG = dict(d_model=32, n_layers=1, n_heads=2, max_len=32)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return str(tmp_path_factory.mktemp("sealed"))


@pytest.fixture(scope="module")
def pkernel(runtime_dir, storage):
    kp = start_kernel(runtime_dir, NAME, storage_dir=storage, encrypt_storage=True)
    yield kp
    assert kp.stop() == 0


def refused(call, *args, **kwargs) -> LlmosError:
    with pytest.raises(LlmosError) as err:
        call(*args, **kwargs)
    return err.value


def records(runtime_dir, **match) -> list[dict]:
    folder = runtime.kernel_dir(NAME, runtime_dir)
    return [line.record for line in auditlog.lines(folder)
            if line.record and all(line.record.get(k) == v for k, v in match.items())]  # fmt: skip


def test_rights_come_from_the_attach_are_checked_by_name_and_only_ever_shrink(pkernel, capsys):
    with Client(pkernel.address, name="plain") as c, Client(name="owner", kernel=NAME, admin=True) as owner:
        assert c.getpid().rights == sorted(rights.DEFAULT) and owner.getpid().rights == sorted(rights.ALL)
        err = refused(c.driver_load, "mocktpu")
        assert err.errno == Errno.EPERM and "'driver'" in err.message
        assert refused(c.rights_drop, ["root"]).errno == Errno.EINVAL
        left = c.rights_drop(["device:cpu0", "spawn"])
        assert "spawn" not in left and rights.ANY_DEVICE not in left and left == c.rights_drop()
        for device in ("cpu0", "cpu"):  # by name or by kind, the same device
            err = refused(c.alloc, device, [4])
            assert err.errno == Errno.EPERM and "'device:cpu0'" in err.message
        err = refused(c.spawn, "echo", ["1"])
        assert err.errno == Errno.EPERM and "'spawn'" in err.message
        assert "spawn" not in c.rights_drop()  # refused calls gave nothing back
        capsys.readouterr()
        assert main(["ps", "--kernel", NAME]) == 0
        rows = {row.split()[2]: row for row in capsys.readouterr().out.splitlines()[1:]}
        assert rows["plain"].endswith("default -device:* -spawn") and rows["owner"].endswith(" all")
        assert rows["llmos-ps"].endswith(" default")


def test_a_child_without_spawn_cannot_spawn_and_the_refusal_is_audited(pkernel, runtime_dir, capsys):
    with Client(pkernel.address, name="parent") as parent:
        err = refused(parent.spawn, "echo", rights=["driver"])  # more than it holds
        assert err.errno == Errno.EPERM and "'driver'" in err.message
        child = parent.spawn("nest", ["{}"], rights=sorted(rights.DEFAULT - {"spawn"}))
        out: list[str] = []
        assert parent.wait(child.pid, timeout_s=30, on_output=out.append).status == 0
        assert "".join(out).split() == ["EPERM"]
    (spawn,) = records(runtime_dir, event="spawn", child=child.pid)
    assert spawn["program"] == "nest" and "spawn" not in spawn["rights"]
    until(lambda: records(runtime_dir, event="denied", pid=child.pid))  # written by the audit writer within 50 ms
    assert main(["audit", "show", "--kernel", NAME, "--denied", "--pid", str(child.pid)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 1 and "denied" in shown[0] and "lacks the right 'spawn'" in shown[0]
    assert '"program": "hold"' in shown[0]  # what it tried


def test_editing_one_line_of_the_audit_log_fails_verify_naming_it(pkernel, runtime_dir, tmp_path, capsys):
    folder = runtime.kernel_dir(NAME, runtime_dir)
    until(lambda: len(records(runtime_dir)) >= 5)
    shutil.copy(os.path.join(folder, "audit.log"), tmp_path / "audit.log")  # a still picture of the live log
    assert os.stat(os.path.join(folder, "audit.log")).st_mode & 0o777 == 0o600
    assert main(["audit", "verify", "--dir", str(tmp_path)]) == 0
    lines = (tmp_path / "audit.log").read_text().splitlines()
    rec = json.loads(lines[2])
    rec["t"] += 1  # a small lie about when it happened
    lines[2] = json.dumps(rec)
    (tmp_path / "audit.log").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify", "--dir", str(tmp_path)]) == 1
    assert "audit.log line 3" in capsys.readouterr().out


def test_checkpoints_are_sealed_on_disk_and_load_back_bit_for_bit(pkernel, runtime_dir, storage):
    tokens = list(b"sealed at rest")
    with Client(pkernel.address, name="saver") as c:
        model = c.model_load("cpu", "tinygpt", config=CONFIG, seed=3, kv_blocks=4)
        want = c.logprobs(model.model, tokens)
        c.model_save(model.model, "ck.safetensors")
        assert refused(c.model_save, model.model, "hf", format="hf").errno == Errno.EINVAL
        path = os.path.join(storage, "ck.safetensors")
        raw = open(path, "rb").read()
        assert raw.startswith(sealed.MAGIC) and b"llmos-checkpoint" not in raw and b"tinygpt" not in raw
        with pytest.raises(ValueError, match="sealed"):
            load_checkpoint(path)  # unreadable without the key
        again = c.model_load("cpu", checkpoint="ck.safetensors", kv_blocks=4)
        assert c.logprobs(again.model, tokens) == want
        digest = hashlib.sha256(raw).hexdigest()
        until(lambda: records(runtime_dir, event="checkpoint_load", pid=c.pid))
        (saved,) = records(runtime_dir, event="checkpoint_save", pid=c.pid)
        (loaded,) = records(runtime_dir, event="checkpoint_load", pid=c.pid)
        assert saved["sha256"] == loaded["sha256"] == digest and saved["sealed"] and loaded["sealed"]
        for where in (sealed.HEADER + 20, len(raw) - 40):  # the first chunk (the kernel reads it), the last (the driver)
            bad = bytearray(raw)
            bad[where] ^= 0x10
            open(path, "wb").write(bad)
            err = refused(c.model_load, "cpu", checkpoint="ck.safetensors", kv_blocks=4)
            assert err.errno == Errno.EINVAL and "checkpoint failed authentication" in err.message, where
        open(path, "wb").write(raw[: len(raw) // 2])  # truncated
        err = refused(c.model_load, "cpu", checkpoint="ck.safetensors", kv_blocks=4)
        assert err.errno == Errno.EINVAL and "checkpoint failed authentication" in err.message
