"""Every hook of llmos, in one module.

Plugins implement these with `llmos.syscalls.plugin.hookimpl`. Built-in
plugins are listed in `llmos.kernel.plugins.DEFAULT_PLUGINS`; third-party
ones come from the `llmos` entry-point group (turned off by
LLMOS_DISABLE_PLUGIN_AUTOLOAD=1) or the LLMOS_PLUGINS variable. Each
docstring says when the kernel calls the hook and how results combine.
"""

from llmos.syscalls.plugin import DriverEntry, ModelFolder, ProgramEntry, Tokenizer, hookspec


@hookspec
def llmos_drivers() -> list[DriverEntry]:
    """Name the device drivers this plugin provides.

    Called once at boot. Every plugin's lists are concatenated; for a kind
    named twice, the plugin registered last wins. The kernel starts one
    driver host process per device of each kind it is told to use.
    """


@hookspec
def llmos_programs() -> list[ProgramEntry]:
    """Name the userland programs this plugin provides (`llmos run NAME`, spawn).

    Called at boot. Every plugin's lists are concatenated; for a name given
    twice, the plugin registered last wins.
    """


@hookspec
def llmos_models() -> dict[str, str]:
    """Name the model architectures this plugin provides: name -> "module:function".

    Called on every model_load, to check the architecture asked for and find
    its target. Every plugin's dicts are merged; for a name given twice, the
    plugin registered last wins. The function returns the architecture's
    `llmos.drivers.models.Architecture` entry and is only imported in driver
    host processes, never in the kernel.
    """


@hookspec
def llmos_model_sizes() -> dict[str, str]:
    """Name, per model architecture, a torch-free function that sizes a model before it is built.

    Called on every model_load, before the driver builds anything: the kernel
    admits the model's memory first. name -> "module:function"; the function
    takes (config dict, dtype, kv_blocks, block_size) and returns a
    `llmos.syscalls.driver.ModelDesc` (full config, params, param_bytes,
    kv_bytes) equal to the one the driver reports once built, or raises
    ValueError for a bad config. It is imported in the kernel, so it must not
    import torch. An architecture without one cannot be loaded (EINVAL).
    """


@hookspec(firstresult=True)
def llmos_model_folder(folder: str) -> ModelFolder | None:
    """Read a Hugging Face-format model folder (config.json and weights) for the kernel.

    Called on model_load with a `path` (or a `checkpoint` that is a folder),
    in the kernel, before anything is built: so torch-free. firstresult: the
    first plugin that recognises the folder (its config.json's `model_type`)
    answers a `ModelFolder`; None passes to the next plugin. Raise
    FileNotFoundError or ValueError for a folder that is yours but unreadable.
    """


@hookspec(firstresult=True)
def llmos_tokenizer(arch: str, config: dict, folder: str) -> Tokenizer | None:
    """Give the tokenizer of a model the kernel has just loaded.

    Called once per model_load, in the kernel (torch-free), with the model's
    architecture, config and the folder it came from ("" for a fresh model or
    an llmos checkpoint). firstresult: the first non-None answer is the
    model's tokenizer (`llmos.syscalls.plugin.Tokenizer`); when none answers,
    the model takes token ids only. Raise ValueError for a tokenizer file
    that is yours but broken.
    """


@hookspec(firstresult=True)
def llmos_memory_service(device: str, capacity: int, default_quota: int | None):
    """Make the tensor memory accounting of one device.

    Called each time a device comes online. firstresult: the first non-None
    answer is used. It must behave like `llmos.services.memory.tensor.TensorMemory`
    (admit, charge, release, transfer, set_quota, forget_owner, used, free).
    """


@hookspec(firstresult=True)
def llmos_device_queue(device: str, policy):
    """Make the work queue of one device, which decides the order of device work.

    Called once per device at boot, with the scheduling policy instance the
    kernel config chose for it. firstresult: the first non-None answer is
    used. It must behave like `llmos.services.scheduler.devqueue.PolicyQueue`
    (push, pop, requeue_to_tail, set_policy, drain, len, iteration). The
    kernel's own copies for a host-visible device bypass it when the device
    is idle and the queue's len is 0.
    """


@hookspec(firstresult=True)
def llmos_pick_device(devices: list) -> str | None:
    """Choose the device a call naming `auto` runs on.

    Called on every call that names device `auto`, with the `DeviceInfo` of
    each online device. firstresult: the first plugin to answer a device name
    decides; None passes to the next plugin.
    """


@hookspec
def llmos_scheduler_policies() -> dict[str, type]:
    """Name the scheduling policies this plugin provides: policy name -> class.

    Called when a scheduler is built. Every plugin's dicts are merged; for a
    name given twice, the plugin registered last wins.
    """


@hookspec(historic=True)
def llmos_kernel_started(name: str, address: str, devices: list[str]) -> None:
    """Told once that the kernel is serving, with its name, address and devices.

    historic: a plugin registered after boot is told too, at registration.
    """


@hookspec
def llmos_process_exit(pid: int, name: str, status: int, reason: str) -> None:
    """Told after a process left the table and all it held was reclaimed.

    Called for every exit: exit syscall, kill, crash, lost lease.
    """
