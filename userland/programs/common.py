"""What the model programs share: their options, how they open a model, and how they report.

Every program prints its arguments first (`ARG name value`, one a line, so a
run can be repeated exactly), turns a failed syscall into one line on stderr
and exit status 1 (argparse already exits with 2 on bad usage), and ends with
one machine-readable line `RESULT {json}` that scripts (the demo, `loadgen`)
parse.
"""

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator

from llmos.syscalls import Errno
from llmos.syscalls import messages as m

from ..client import Client
from ..errors import LlmosError

ARCH = "tinygpt"
DEFAULT_CHECKPOINT = "tinygpt.safetensors"
"""Where `train` writes and the other programs read, under the kernel's storage directory."""
RESULT_PREFIX = "RESULT "

_HINTS = {
    Errno.ENODEV: "is that device on this machine? `llmos devices` lists the kernel's devices",
    Errno.EAGAIN: "the memory it needs is held by others right now; retry later",
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the description's paragraphs as written, and add each option's default (where it has one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if any(action.default is none for none in (None, False, argparse.SUPPRESS)) or "default:" in text:
            return text
        return text + " (default: %(default)s)"


class ProgramError(Exception):
    """A failure a program explains in one line (its message); `guarded` prints it and exits with 1."""


def parser(prog: str, description: str, devices: str = "") -> argparse.ArgumentParser:
    """An argument parser with the options every model program takes: --device and --seed.

    `devices` ends --device's help, for a program that takes more than one device.
    """
    p = argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    p.add_argument("--device", default="cpu",
                   help="cpu, mocktpu, cuda or auto (the kernel picks); or a name: cpu0" + devices)  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def add_model_size(p: argparse.ArgumentParser) -> None:
    """--d-model, --layers, --heads: the size of a fresh tinygpt."""
    p.add_argument("--d-model", type=int, default=128, help="width of a fresh model")
    p.add_argument("--layers", type=int, default=4, help="transformer blocks of a fresh model")
    p.add_argument("--heads", type=int, default=4, help="attention heads of a fresh model")


def model_config(args: argparse.Namespace, max_len: int) -> dict:
    """The tinygpt config that the size options and a context length describe."""
    return {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads, "max_len": max_len}


def add_checkpoint(p: argparse.ArgumentParser, kv_blocks: int = 256) -> None:
    """--checkpoint PATH (under the kernel's storage directory), --model-dir NAME (a Hugging Face-format
    folder under its models directory, instead) and --kv-blocks (default `kv_blocks`)."""
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="under the kernel's storage directory")
    p.add_argument("--model-dir", metavar="NAME", default=None,
                   help="a Hugging Face-format model folder under the kernel's models directory "
                        "(`llmos boot --models DIR`), used instead of --checkpoint")  # fmt: skip
    p.add_argument("--dtype", default="", help="cast the weights on load: float32, bfloat16, float16 (default: as stored)")
    p.add_argument("--kv-blocks", type=int, default=kv_blocks, help="KV cache blocks of 16 tokens for the model")


def model_name(args: argparse.Namespace) -> str:
    """What the options load, for messages: the model folder or the checkpoint."""
    return args.model_dir or args.checkpoint


def add_sampling(p: argparse.ArgumentParser, max_tokens: int) -> None:
    """--max-tokens, --temperature, --top-k, --top-p: how to generate (greedy by default)."""
    p.add_argument("--max-tokens", type=int, default=max_tokens, help="tokens to generate at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy; higher is more random")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens only (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample within this probability mass")


def sampling(args: argparse.Namespace) -> dict:
    """The generate keyword arguments the sampling options (and --seed) give."""
    return {
        "max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "seed": args.seed,
    }  # fmt: skip


def show_args(args: argparse.Namespace) -> None:
    """Print every argument as `ARG name value`, so the run can be repeated."""
    for name, value in vars(args).items():
        print(f"ARG {name} {value}")
    sys.stdout.flush()


def print_result(**fields) -> None:
    """Print the machine-readable summary line `RESULT {json}`."""
    print(RESULT_PREFIX + json.dumps(fields), flush=True)


def parse_result(output: str) -> dict | None:
    """The fields of the last `RESULT {json}` line of a program's output, or None if it printed none."""
    lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None


def describe(exc: LlmosError) -> str:
    """One line for a failed syscall: the kernel's message, the errno, and a hint where one helps."""
    name = exc.errno.name if isinstance(exc.errno, Errno) else f"errno {exc.errno}"
    hint = _HINTS.get(exc.errno, "")
    return f"{exc.message} ({name}){'; ' + hint if hint else ''}"


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a program's body: a failed syscall, an unreadable file or a ProgramError is one line on stderr, status 1."""
    try:
        return body()
    except LlmosError as exc:
        print(f"{prog}: {describe(exc)}", file=sys.stderr, flush=True)
    except (OSError, ProgramError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr, flush=True)
        return 130
    return 1


@contextlib.contextmanager
def open_model(c: Client, args: argparse.Namespace) -> Iterator[tuple[int, m.ModelInfo | None]]:
    """The model the options name, as (handle, ModelInfo), freed on leaving.

    It is the --model-dir folder (where the program has that option) or else the --checkpoint,
    loaded on --device, or with --fresh (where the program has that option) a fresh tinygpt of
    the size options and --max-len drawn from --seed. An inherited handle (--model, where the
    program has that option) is used as it is: neither loaded nor freed here, and its ModelInfo
    is not known (None). On an error the model is not freed here: the kernel reclaims it when
    the program's process leaves.
    """
    if getattr(args, "model", None) is not None:
        yield args.model, None
        return
    dtype = getattr(args, "dtype", "")
    if getattr(args, "fresh", False):
        config = model_config(args, args.max_len)
        info = c.model_load(args.device, ARCH, config=config, kv_blocks=args.kv_blocks, seed=args.seed)
        what = f"a fresh model (seed {args.seed})"
    elif getattr(args, "model_dir", None):
        info = c.model_load(args.device, path=args.model_dir, kv_blocks=args.kv_blocks, dtype=dtype)
        what = f"{args.model_dir} ({info.arch}, {info.dtype}, tokenizer {info.tokenizer or 'none'})"
    else:
        info = c.model_load(args.device, checkpoint=args.checkpoint, kv_blocks=args.kv_blocks, dtype=dtype)
        what = f"{args.checkpoint}, trained {info.step} steps,"
    print(f"loaded {what} on {info.device}: {info.params:,} parameters", flush=True)
    yield info.model, info
    c.model_free(info.model)
