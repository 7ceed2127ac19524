"""`llmos run generate`: continue a prompt with a model, streaming the text as it comes.

The model is a checkpoint under the kernel's storage directory (--checkpoint,
loaded here and freed at the end) or a model handle this program inherited
from its parent (--model HANDLE, passed to spawn(..., models=[HANDLE])): then
it neither loads nor frees the model, and its generate call shares batched
steps with everyone else's on that model. With --together (loadgen passes
it) it first waits until no sibling of the same name is still starting, so
that they all generate at the same time.
"""

import argparse
import sys
import time

from ..client import Client
from .common import (
    add_checkpoint,
    add_sampling,
    guarded,
    open_model,
    parser,
    print_result,
    sampling,
    show_args,
)

TOGETHER_TIMEOUT_S = 120.0
"""How long --together waits for slow siblings before generating anyway."""
POLL_S = 0.005


def main(argv: list[str]) -> int:
    """Parse the options, print them, and generate."""
    p = parser("generate", __doc__)
    add_checkpoint(p)
    p.add_argument("--model", type=int, default=None, metavar="HANDLE", help="an inherited model handle, used instead")
    p.add_argument("--prompt", default="def ", help="the text to continue")
    add_sampling(p, max_tokens=64)
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before TEXT (repeatable)")
    p.add_argument("--together", action="store_true", help="wait until no sibling of this name is still starting")
    args = p.parse_args(argv)
    if args.max_tokens < 1:
        p.error("--max-tokens must be at least 1")
    show_args(args)
    return guarded("generate", lambda: generate(args))


def wait_for_siblings(c: Client) -> None:
    """Block until no other child of this process's parent with this name is still starting (attaching)."""
    me = c.getpid()
    deadline = time.monotonic() + TOGETHER_TIMEOUT_S
    while any(p.ppid == me.ppid and p.name == me.name and p.state == "starting" for p in c.ps()):
        if time.monotonic() > deadline:
            print(f"siblings still starting after {TOGETHER_TIMEOUT_S:.0f} s: generating without them", flush=True)
            return
        time.sleep(POLL_S)


def generate(args: argparse.Namespace) -> int:
    """Stream the continuation of the prompt, then a summary and the RESULT line."""
    with Client(name="generate") as c:
        if args.together:
            wait_for_siblings(c)
        with open_model(c, args) as (model, _):
            print(args.prompt, end="", flush=True)
            started = time.time()
            done = c.generate(model, args.prompt, **sampling(args), stop=args.stop,
                              on_text=lambda text: print(text, end="", flush=True))  # fmt: skip
    tokens_per_s = done.tokens / done.wall_s if done.wall_s else 0.0
    print(f"\n-- {done.tokens} tokens, finish: {done.finish}, {tokens_per_s:,.0f} tokens/s, "
          f"{done.shared_steps} steps shared with other sequences")  # fmt: skip
    print_result(
        text=done.text, tokens=done.tokens, finish=done.finish, wall_s=done.wall_s, shared_steps=done.shared_steps,
        tokens_per_s=tokens_per_s, started=started, cached=done.cached,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
