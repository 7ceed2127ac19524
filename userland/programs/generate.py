"""`llmos run generate`: continue a prompt with a model, streaming the text as it comes.

The model is a checkpoint under the kernel's storage directory (--checkpoint,
loaded here and freed at the end) or a model handle this program inherited
from its parent (--model HANDLE, passed to spawn(..., models=[HANDLE])): then
it neither loads nor frees the model, and its generate call shares batched
steps with everyone else's on that model. With --together (loadgen passes
it) it first waits until no sibling of the same name is still starting, so
that they all generate at the same time. With --for S it keeps generating
the same continuation, call after call, for S seconds (a steady load for
`llmos top` and `llmos web`: `llmos demo --web` runs it so); the text is
shown once and the RESULT counts every call.
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
    p.add_argument("--for", dest="for_s", type=float, default=0.0, metavar="S",
                   help="keep generating, call after call, for S seconds (default: one call)")
    args = p.parse_args(argv)
    if args.max_tokens < 1:
        p.error("--max-tokens must be at least 1")
    if args.for_s < 0:
        p.error("--for must be 0 or more seconds")
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
            calls, tokens, wall_s, shared, cached = 1, done.tokens, done.wall_s, done.shared_steps, done.cached
            while time.time() - started < args.for_s:
                again = c.generate(model, args.prompt, **sampling(args), stop=args.stop)
                calls, tokens, wall_s = calls + 1, tokens + again.tokens, wall_s + again.wall_s
                shared, cached = shared + again.shared_steps, cached + again.cached
    tokens_per_s = tokens / wall_s if wall_s else 0.0
    print(f"\n-- {tokens} tokens{f' in {calls} calls' if calls > 1 else ''}, finish: {done.finish}, "
          f"{tokens_per_s:,.0f} tokens/s, {shared} steps shared with other sequences")  # fmt: skip
    print_result(
        text=done.text, tokens=tokens, finish=done.finish, wall_s=wall_s, shared_steps=shared,
        tokens_per_s=tokens_per_s, started=started, cached=cached, calls=calls,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
