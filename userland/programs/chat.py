"""`llmos run chat`: talk with a model, one line at a time.

An interactive program: `llmos run chat` runs it in the command's own process,
reading your terminal (the kernel gives the children it spawns no stdin).
Each line you type joins the conversation, which is the prompt of the
model's reply, cut from the left to fit the model's context minus
--max-tokens. The reply is streamed as it comes and ends at the first
newline. /quit or the end of the input (Ctrl-D) leaves.
"""

import argparse
import sys

from llmos.drivers.models.tokenizer import ByteTokenizer

from ..client import Client
from .common import (
    ProgramError,
    add_checkpoint,
    add_sampling,
    guarded,
    open_model,
    parser,
    sampling,
    show_args,
)

USER, MODEL = "user: ", "model: "
"""How the turns are written into the prompt."""
QUIT = "/quit"
STOP = "\n"
"""A reply ends at the end of its line."""


def main(argv: list[str]) -> int:
    """Parse the options, print them, and chat."""
    p = parser("chat", __doc__)
    add_checkpoint(p)
    add_sampling(p, max_tokens=64)
    args = p.parse_args(argv)
    if args.max_tokens < 1:
        p.error("--max-tokens must be at least 1")
    show_args(args)
    return guarded("chat", lambda: chat(args))


def read_line(tty: bool) -> str | None:
    """The next line the user typed, or None at the end of the input (a line read from a pipe is echoed)."""
    try:
        line = input("> " if tty else "")
    except EOFError:
        return None
    if not tty:
        print(f"> {line}")
    return line.strip()


def chat(args: argparse.Namespace) -> int:
    """Read lines, answer each with the model, until /quit or the end of the input."""
    tok = ByteTokenizer()
    tty = sys.stdin.isatty()
    turns = 0
    with Client(name="chat") as c, open_model(c, args) as (model, config):
        budget = config["max_len"] - args.max_tokens
        if budget < 1:
            max_len = config["max_len"]
            raise ProgramError(f"--max-tokens {args.max_tokens} leaves no room in the model's context of {max_len}")
        print(f"chatting with {args.checkpoint}: type a line; {QUIT} or Ctrl-D leaves", flush=True)
        history = ""
        while (line := read_line(tty)) is not None and line != QUIT:
            if not line:
                continue
            history += f"{USER}{line}\n{MODEL}"
            print(MODEL, end="", flush=True)
            done = c.generate(model, tok.encode(history)[-budget:], **sampling(args), stop=[STOP],
                              on_text=lambda text: print(text, end="", flush=True))  # fmt: skip
            print(flush=True)
            history += done.text + STOP
            turns += 1
    print(f"bye ({turns} replies)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
