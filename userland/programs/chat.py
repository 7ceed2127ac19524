"""`llmos run chat`: talk with a model, one line at a time.

An interactive program: `llmos run chat` runs it in the command's own process,
reading your terminal (the kernel gives the children it spawns no stdin).
Each line you type joins the conversation, which is the prompt of the
model's reply, cut from the left to fit the model's context minus
--max-tokens. A model whose folder carries a chat template (its
tokenizer_config.json) gets the conversation rendered by it, and its reply
ends at its end-of-turn token; any other model gets "user: ..." and
"model: ..." lines, and its reply ends at the first newline. Tokens are the
model's own, from the kernel (`tokenize`). The reply is streamed as it
comes. /quit or the end of the input (Ctrl-D) leaves.
"""

import argparse
import sys

from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..client import Client
from .common import (
    ProgramError,
    add_checkpoint,
    add_sampling,
    guarded,
    model_name,
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


class Conversation:
    """The turns so far, as the model's prompt: through its chat template, or as plain lines."""

    def __init__(self, template: str, bos_token: str, eos_token: str):
        self.turns: list[dict] = []
        self.tokens = {"bos_token": bos_token, "eos_token": eos_token}
        self.template = None
        if template:
            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            env.globals["raise_exception"] = _template_error
            self.template = env.from_string(template)

    def add(self, role: str, text: str) -> None:
        """Record one turn ("user" or "assistant")."""
        self.turns.append({"role": role, "content": text})

    def prompt(self) -> str:
        """The text the model continues: the turns, then the start of its own."""
        if self.template is not None:
            return self.template.render(messages=self.turns, add_generation_prompt=True, **self.tokens)
        names = {"user": USER, "assistant": MODEL}
        return "".join(f"{names[t['role']]}{t['content']}{STOP}" for t in self.turns) + MODEL


def _template_error(message: str):
    """What a chat template calls to refuse a conversation."""
    raise ProgramError(f"the chat template refused the conversation: {message}")


def chat(args: argparse.Namespace) -> int:
    """Read lines, answer each with the model, until /quit or the end of the input."""
    tty = sys.stdin.isatty()
    turns = 0
    with Client(name="chat") as c, open_model(c, args) as (model, info):
        budget = info.config["max_len"] - args.max_tokens
        if budget < 1:
            max_len = info.config["max_len"]
            raise ProgramError(f"--max-tokens {args.max_tokens} leaves no room in the model's context of {max_len}")
        talk = Conversation(info.chat_template, info.bos_token, info.eos_token)
        stop = [] if talk.template is not None else [STOP]  # a templated reply ends with the model's end-of-turn token
        how = "its chat template" if stop == [] else "plain user/model lines"
        print(f"chatting with {model_name(args)} ({how}): type a line; {QUIT} or Ctrl-D leaves", flush=True)
        while (line := read_line(tty)) is not None and line != QUIT:
            if not line:
                continue
            talk.add("user", line)
            ids = c.tokenize(model, talk.prompt(), special=talk.template is None)  # a template writes its own BOS
            print(MODEL, end="", flush=True)
            done = c.generate(model, ids[-budget:], **sampling(args), stop=stop,
                              on_text=lambda text: print(text, end="", flush=True))  # fmt: skip
            print(flush=True)
            talk.add("assistant", done.text)
            turns += 1
    print(f"bye ({turns} replies)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
