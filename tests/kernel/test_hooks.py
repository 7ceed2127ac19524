"""Every hook is documented, prefixed, and exercised; plugins load as promised."""

import inspect
import json
import os
import subprocess
import sys

import pytest

from llmos.kernel import hookspecs, plugins
from llmos.services.memory.tensor import TensorMemory
from llmos.services.scheduler.devqueue import PolicyQueue
from llmos.services.scheduler.policies import FCFS
from llmos.syscalls.plugin import DriverEntry, ModelFolder, ProgramEntry, hookimpl

from conftest import until

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("llmos_")]


def test_every_hook_is_prefixed_and_documented():
    specs = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "llmos_spec")]
    assert specs == HOOKS and HOOKS
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc.split()) >= 12, f"{name} needs a docstring that says when it is called"
        assert "Called" in doc or "Told" in doc, f"{name}: say when the kernel calls it"


def test_every_hook_is_documented_in_docs():
    text = (inspect.getfile(hookspecs).rsplit("/kernel/", 1)[0] + "/docs/plugins.md")
    with open(text) as f:
        doc = f.read()
    for name in HOOKS:
        assert f"`{name}" in doc, f"{name} is missing from docs/plugins.md"


def test_auto_prefers_real_accelerators_then_the_cpu():
    from llmos.syscalls.messages import DeviceInfo

    def dev(name, simulated=False, host_visible=False, peak=0.0):
        return DeviceInfo(name=name, kind=name[:-1], state="online", description="", capacity_bytes=1, used_bytes=0,
                          dtypes=[], ops=[], host_visible=host_visible, driver_os_pid=1, restarts=0, queued=0,
                          simulated=simulated, peak_flops=peak)  # fmt: skip

    pm = plugins.plugin_manager()
    cpu, tpu = dev("cpu0", host_visible=True), dev("mocktpu0", simulated=True, peak=2.75e14)
    gpus = [dev("cuda0", peak=1e14), dev("cuda1", peak=9e14)]
    assert pm.hook.llmos_pick_device(devices=[cpu, tpu, *gpus]) == "cuda1"
    assert pm.hook.llmos_pick_device(devices=[tpu, cpu]) == "cpu0"
    assert pm.hook.llmos_pick_device(devices=[tpu]) == "mocktpu0"
    assert pm.hook.llmos_pick_device(devices=[]) is None


def test_builtin_plugins_answer_every_hook():
    pm = plugins.plugin_manager()
    assert {"cpu"} <= set(plugins.drivers(pm))
    assert isinstance(plugins.drivers(pm)["cpu"], DriverEntry)
    assert "matmul" in plugins.programs(pm)
    assert isinstance(pm.hook.llmos_memory_service(device="x", capacity=10, default_quota=None), TensorMemory)
    assert isinstance(pm.hook.llmos_device_queue(device="x", policy=FCFS()), PolicyQueue)
    assert plugins.model_sizes(pm)["tinygpt"] == "llmos.drivers.models.tinygpt_config:tinygpt_size"
    policies = {name for answer in pm.hook.llmos_scheduler_policies() for name in answer}
    assert policies >= {"fcfs", "rr", "priority", "mlfq", "vtc"}


class Recorder:
    """A plugin that records the notification hooks and overrides a firstresult one."""

    def __init__(self):
        self.started = []
        self.exits = []

    @hookimpl
    def llmos_kernel_started(self, name, address, devices):
        self.started.append((name, devices))

    @hookimpl
    def llmos_process_exit(self, pid, name, status, reason):
        self.exits.append((pid, status, reason))

    @hookimpl
    def llmos_device_queue(self, device, policy):
        return "mine"

    @hookimpl
    def llmos_programs(self):
        return [ProgramEntry("matmul", "elsewhere:main", "an override")]


def test_later_plugins_win_and_historic_hooks_reach_late_plugins():
    pm = plugins.plugin_manager()
    pm.hook.llmos_kernel_started.call_historic(kwargs=dict(name="k", address="ipc://x", devices=["cpu0"]))
    rec = Recorder()
    pm.register(rec)
    assert rec.started == [("k", ["cpu0"])]  # historic: told on registration
    assert pm.hook.llmos_device_queue(device="cpu0", policy=FCFS()) == "mine"  # firstresult: the later plugin answers
    assert plugins.programs(pm)["matmul"].target == "elsewhere:main"  # the later registration wins a clash
    pm.hook.llmos_process_exit(pid=3, name="p", status=0, reason="exit(0)")
    assert rec.exits == [(3, 0, "exit(0)")]


def test_notification_hooks_fire_in_a_real_kernel(client, kernel):
    from llmos.userland import Client

    def events() -> list[dict]:
        with open(os.environ["LLMOS_TEST_EVENTS"]) as f:
            return [json.loads(line) for line in f]

    other = Client(kernel.address, name="bye")
    other.close(4)
    exited = {"hook": "llmos_process_exit", "pid": other.pid, "status": 4, "reason": "exit(4)"}
    until(lambda: exited in events())  # exit answers first, then reclaims (and calls the hook)
    assert {"hook": "llmos_kernel_started", "name": "shared", "devices": ["cpu0"]} in events()


def fake_plugin_env(tmp_path) -> dict:
    """An environment where the package llmos-fake-plugin is installed with an `llmos` entry point."""
    dist = tmp_path / "llmos_fake_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: llmos-fake-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[llmos]\nfake = llmos_fake_plugin\n")
    (tmp_path / "llmos_fake_plugin.py").write_text(
        "from llmos.syscalls.plugin import ProgramEntry, hookimpl\n"
        "@hookimpl\ndef llmos_programs():\n    return [ProgramEntry('fake', 'x:y', 'from an entry point')]\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop(plugins.DISABLE_AUTOLOAD_ENV, None)
    return env


@pytest.mark.parametrize("disable", [False, True])
def test_entry_points_and_the_disable_variable(tmp_path, disable):
    env = fake_plugin_env(tmp_path)
    if disable:
        env[plugins.DISABLE_AUTOLOAD_ENV] = "1"
    code = "from llmos.kernel import plugins; print('fake' in plugins.programs(plugins.plugin_manager()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(not disable)


def test_a_plugin_named_twice_is_registered_once(tmp_path):
    """An installed package with an entry point, also named in LLMOS_PLUGINS: one registration, no crash."""
    env = fake_plugin_env(tmp_path)
    env[plugins.PLUGINS_ENV] = f"{env.get(plugins.PLUGINS_ENV, '')},llmos_fake_plugin"
    code = (
        "from llmos.kernel import plugins; import llmos_fake_plugin as mod; pm = plugins.plugin_manager();"
        "plugins.load_entry_points(pm);"  # again, as driver_load does
        "print([name for name, p in pm.list_name_plugin() if p is mod], 'fake' in plugins.programs(pm))"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['llmos_fake_plugin'] True"


def test_model_architectures_come_from_the_hook_and_a_later_plugin_wins():
    class Arch:
        @hookimpl
        def llmos_models(self):
            return {"tinygpt": "mypkg:other", "mygpt": "mypkg:mygpt"}

    pm = plugins.plugin_manager()
    assert plugins.models(pm)["tinygpt"] == "llmos.drivers.models:tinygpt_architecture"
    pm.register(Arch())
    models = plugins.models(pm)
    assert (models["tinygpt"], models["mygpt"]) == ("mypkg:other", "mypkg:mygpt")
    assert models["llama"] == "llmos.drivers.models:llama_architecture"  # the built-in others stay
    from llmos.drivers.models import TinyGPT, tinygpt_architecture

    assert tinygpt_architecture().model_class is TinyGPT


def test_the_kernel_and_its_plugins_load_without_torch():
    """The kernel process stays small: torch only loads in driver hosts and clients."""
    code = (
        "import sys; from llmos.kernel import kernel, plugins; pm = plugins.plugin_manager();"
        "plugins.drivers(pm); plugins.programs(pm); plugins.policies(pm); plugins.models(pm); plugins.model_sizes(pm);"
        "import llmos.drivers.models.decoding, llmos.drivers.models.tokenizer, llmos.drivers.models.safetensors_header;"
        "from llmos.drivers.models.tinygpt_config import tinygpt_size; tinygpt_size({}, 'float32', 4, 16);"
        "print('torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "LLMOS_PLUGINS"}  # the test programs plugin uses torch
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_program_that_moves_no_tensor_starts_without_torch():
    """The client imports torch only for tensors, so generate and loadgen children (and `llmos`) start fast."""
    code = (
        "import sys, llmos.userland.programs.generate, llmos.userland.programs.loadgen, llmos.userland.cli.main as cli;"
        "cli.build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_model_folders_and_tokenizers_come_from_the_hooks(tmp_path):
    """llmos_model_folder reads a folder's config.json torch-free; llmos_tokenizer gives a model its own tokenizer."""
    import hf_folders  # tests/support

    folder = tmp_path / "tiny"
    hf_folders.llama_folder(str(folder))
    pm = plugins.plugin_manager()
    found = pm.hook.llmos_model_folder(folder=str(folder))
    assert (found.arch, found.dtype, found.config["n_kv_heads"]) == ("llama", "float32", 2)
    tok = pm.hook.llmos_tokenizer(arch="llama", config=found.config, folder=str(folder))
    assert tok.encode_prompt("hi")[0] == 0 and tok.eos_ids == {1}  # Llama's BOS first; EOS ends a generation
    assert pm.hook.llmos_tokenizer(arch="tinygpt", config={}, folder="").name == "bytes"
    assert pm.hook.llmos_tokenizer(arch="llama", config=found.config, folder="") is None  # ids only

    class Mine:
        @hookimpl
        def llmos_model_folder(self, folder):
            return ModelFolder("mine", {"vocab_size": 3}, "float16") if folder.endswith("special") else None

    pm.register(Mine())
    assert pm.hook.llmos_model_folder(folder="/x/special").arch == "mine"  # a later plugin is asked first
    assert pm.hook.llmos_model_folder(folder=str(folder)).arch == "llama"  # and passes what is not its own
