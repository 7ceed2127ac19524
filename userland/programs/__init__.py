"""The built-in userland programs, registered through the llmos_programs hook.

The model programs (train, generate, chat, eval, compress, loadgen) live in this
package, one module each (eval's is `evaluate.py`), with their shared plumbing in
`common.py`; docs/models.md describes them and their options.
"""

from llmos.syscalls.plugin import ProgramEntry, hookimpl


@hookimpl
def llmos_programs() -> list[ProgramEntry]:
    """The programs `llmos run` knows without any plugin installed."""
    return [
        ProgramEntry("matmul", "llmos.userland.examples.matmul:main", "a matmul on a device, checked against torch"),
        ProgramEntry("kvwatch", "llmos.userland.examples.kvwatch:main", "watch a KV sequence grow, fork and shrink"),
        ProgramEntry("whatif", "llmos.userland.examples.whatif:main", "what happens if: one experiment on the kernel"),
        ProgramEntry("train", "llmos.userland.programs.train:main", "train tinygpt with train_step, save a checkpoint"),
        ProgramEntry("generate", "llmos.userland.programs.generate:main", "continue a prompt, streaming the text"),
        ProgramEntry("chat", "llmos.userland.programs.chat:main", "talk with a model line by line", interactive=True),
        ProgramEntry("eval", "llmos.userland.programs.evaluate:main", "held-out perplexity and bits per byte"),
        ProgramEntry("compress", "llmos.userland.programs.compress:main",
                     "quantize or prune a model: size, perplexity and speed before and after"),  # fmt: skip
        ProgramEntry("loadgen", "llmos.userland.programs.loadgen:main", "N generating processes sharing one model"),
    ]
