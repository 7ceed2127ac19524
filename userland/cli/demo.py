"""`llmos demo`: train tinygpt on a private kernel, then let four processes generate from it at once.

The demo is a small shell session on llmos. It boots an embedded kernel with
the default drivers, runs the `train` program as a child process (a fixed,
seeded number of steps on the standard library's sources: about two minutes
on a 2-core machine) while relaying its progress live, loads the trained
checkpoint once, spawns `--procs` `generate` programs that inherit the model
handle (so their generate calls are batched into the same device steps),
prints each one's text and the throughput, and shuts the kernel down. With
`--trace DIR` the kernel logs its events and the demo writes the Perfetto
trace and the PNG plot of the run there. With `--web` it serves `llmos web`
on the demo's kernel from the start (the URL, with its token, is printed
first) and, after the texts, keeps `--procs` processes generating (each
calls generate again and again for 20 s, then a new round starts), so the
page has something to show, until Ctrl-C. Greedy decoding and seeded training
make the texts the same run after run on one machine. SIGTERM (from
`timeout`, a CI runner, a service manager) stops it as cleanly as Ctrl-C: its
children exit and its kernel shuts down.
"""

import argparse
import json
import os
import signal
import sys
import time

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime

from ..client import Client
from ..programs.common import RESULT_PREFIX

PROMPTS = ("class Parser(object):\n    def ", "        if not ", "    return self.", "# ")
"""What the generating processes continue: Python-shaped openings, since the model learned from Python sources."""
CHECKPOINT = "demo.safetensors"


def add_parser(sub) -> None:
    """Add `llmos demo`."""
    p = sub.add_parser(
        "demo",
        help="train tinygpt, then four processes generate from it at once",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cpu", help="device for training and generation (default: cpu)")
    p.add_argument("--steps", type=int, default=800, help="training steps (default: 800, about 2 minutes on 2 cores)")
    p.add_argument("--procs", type=int, default=4, help="generating processes (default: 4)")
    p.add_argument("--tokens", type=int, default=100, help="tokens each process generates (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and the training batches (default: 0)")
    p.add_argument("--trace", metavar="DIR", help="record the kernel's events; write DIR/trace.json and DIR/plot.png")
    p.add_argument("--web", action="store_true",
                   help="serve the web console (llmos web) on the demo's kernel; keep generating until Ctrl-C")
    p.add_argument("--web-port", type=int, default=8470, metavar="PORT",
                   help="its port (default 8470, or any free one if that is taken)")
    p.set_defaults(func=run)


def say(text: str) -> None:
    """A progress line of the demo itself."""
    print(f"[llmos demo] {text}", flush=True)


class Relay:
    """Shows a child's output indented; its progress lines (`step ...`) replace each other in place on a terminal."""

    def __init__(self, prefix: str = "    "):
        self.prefix = prefix
        self.tty = sys.stdout.isatty()
        self.partial = ""
        self.results: list[dict] = []
        self.in_place = False  # the last thing shown is a progress line that the next one may overwrite

    def __call__(self, text: str) -> None:
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self.line(line)

    def line(self, line: str) -> None:
        """Show one whole line of the child's output (or keep its RESULT)."""
        if line.startswith(RESULT_PREFIX):
            self.results.append(json.loads(line[len(RESULT_PREFIX) :]))
        elif line.startswith("ARG "):
            pass  # the program's arguments; the demo prints the command instead
        elif self.tty and line.startswith("step "):
            print(f"\r\033[K{self.prefix}{line}", end="", flush=True)
            self.in_place = True
        else:
            print(("\n" if self.in_place else "") + self.prefix + line, flush=True)
            self.in_place = False


def run_program(c: Client, name: str, args: list[str], models: list[int] | None = None) -> tuple[int, list[dict]]:
    """Spawn a program, relay its output, and return its exit status and RESULT records."""
    say(f"$ llmos run {name} {' '.join(args)}")
    child = c.spawn(name, args, models=models)
    relay = Relay()
    exited = c.wait(child.pid, on_output=relay)
    if relay.partial:
        relay.line(relay.partial)
    return exited.status, relay.results


def train(c: Client, args: argparse.Namespace) -> dict:
    """Step 1: the train program as a child process."""
    say(f"1/3 training tinygpt on {args.device} for {args.steps} steps (the train program, a child process)")
    opts = ["--device", args.device, "--steps", str(args.steps), "--seed", str(args.seed), "--out", CHECKPOINT]
    status, results = run_program(c, "train", opts + ["--every", "200"])
    if status != 0 or not results:
        raise SystemExit(f"llmos demo: training failed (status {status})")
    return results[-1]


WEB_ROUND_S = 20.0
"""With --web: how long each round's processes keep generating."""


def spawn_generators(c: Client, args: argparse.Namespace, model: int, for_s: float = 0.0) -> list:
    """`--procs` generate programs that inherit `model` and start generating together (for `for_s` s
    with --web's rounds, else once): [(prompt, child)]."""
    children = []
    for i in range(args.procs):
        prompt = PROMPTS[i % len(PROMPTS)]
        opts = ["--model", str(model), "--prompt", prompt, "--max-tokens", str(args.tokens), "--together"]
        opts += ["--for", str(for_s)] if for_s else []
        children.append((prompt, c.spawn("generate", opts, models=[model])))
    return children


def generate_together(c: Client, args: argparse.Namespace, info) -> None:
    """Step 2: `--procs` generate programs inherit the model (loaded once) and run at once."""
    say(f"2/3 {args.procs} processes generate from the trained model at once ({info.params:,} parameters on "
        f"{info.device}, loaded once, handle {info.model} inherited by each)")  # fmt: skip
    started = time.monotonic()
    children = spawn_generators(c, args, info.model)
    say(f"spawned pids {', '.join(str(ch.pid) for _, ch in children)}: generate --model {info.model} --together "
        f"--max-tokens {args.tokens} (greedy)")  # fmt: skip
    results = []
    for prompt, child in children:
        c.wait(child.pid)
        results.append((prompt, child.pid, _result_of(child.log)))
    wall = time.monotonic() - started
    tokens = 0
    for prompt, pid, r in results:
        if r is None:
            raise SystemExit(f"llmos demo: generating process {pid} failed; its log: see the kernel's procs/")
        tokens += r["tokens"]
        text = (prompt + r["text"]).replace("\n", "\n" + " " * 14)
        print(f"    pid {pid:<4} | {text}", flush=True)
        print(f"    {'':8} ({r['tokens']} tokens, {r['tokens_per_s']:,.0f} tokens/s, "
              f"{r['shared_steps']} steps shared with the others)", flush=True)  # fmt: skip
    say(f"{args.procs} processes, {tokens} tokens in {wall:.1f} s including process start-up; "
        f"while generating together: {sum(r['tokens_per_s'] for _, _, r in results):,.0f} tokens/s in all")  # fmt: skip


def keep_generating(c: Client, args: argparse.Namespace, model: int, url: str) -> None:
    """With --web: round after round of `--procs` generating processes, until Ctrl-C (or SIGTERM)."""
    say(f"the console stays up at {url}")
    say(f"{args.procs} processes generate again, {WEB_ROUND_S:.0f} s a round, for it to show; Ctrl-C ends the demo")
    rounds = 0
    while True:
        for _, child in spawn_generators(c, args, model, WEB_ROUND_S):
            c.wait(child.pid)
        rounds += 1
        if sys.stdout.isatty():
            print(f"\r    {rounds} rounds", end="", flush=True)


def _result_of(log: str) -> dict | None:
    """The RESULT record a program left in its output log, if any."""
    with open(log, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None


def write_trace(log: str, out_dir: str) -> None:
    """Turn the kernel's event log into DIR/trace.json, DIR/plot.png and DIR/plot-generate.png.

    The generation phase lasts a second or so after minutes of training, so
    the second plot shows just that window: the processes sharing each step.
    """
    from ..trace import from_log, write_chrome
    from ..trace.plot import plot

    tl = from_log(log)
    write_chrome(tl, os.path.join(out_dir, "trace.json"))
    plot(tl, os.path.join(out_dir, "plot.png"))
    generating = [s for s in tl.work if tl.processes.get(s.pid) == "generate"]
    if generating:
        start, end = min(s.start for s in generating), max(s.end for s in generating)
        margin = 0.05 * (end - start)
        plot(tl.window(start - margin, end + margin), os.path.join(out_dir, "plot-generate.png"))
    say(f"trace: {out_dir}/trace.json (open in https://ui.perfetto.dev); plots: {out_dir}/plot.png (the run), "
        f"{out_dir}/plot-generate.png (the generating processes); log: {log}")  # fmt: skip


def start_web(address: str, kernel: str, port: int):
    """`llmos web` on the demo's kernel, in a thread of this process; prints its URL."""
    from .web import WebServer

    try:
        web = WebServer(address, kernel=kernel, port=port)
    except ValueError:  # the port is taken: any free one
        web = WebServer(address, kernel=kernel, port=0)
    web.start()
    say(f"web console: open {web.url}")
    return web


def _interrupt(signum, frame) -> None:
    """SIGTERM: unwind as Ctrl-C does, so the client exits and the kernel is stopped on the way out."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """The demo, step by step."""
    if min(args.steps, args.procs, args.tokens) < 1:
        raise SystemExit("llmos demo: --steps, --procs and --tokens must be at least 1")
    signal.signal(signal.SIGTERM, _interrupt)
    name = f"demo-{os.getpid()}"
    config = KernelConfig(name=name, log_level="warning")
    if args.trace:
        os.makedirs(args.trace, exist_ok=True)
        config = KernelConfig(name=name, log_level="debug", log_file=os.path.join(args.trace, "kernel.log"))
    say(f"booting kernel {name!r} (its drivers start in their own processes)...")
    start = time.monotonic()
    with open(os.devnull, "w") as quiet, boot.start(config, stderr=quiet) as kp:
        say(f"kernel up in {time.monotonic() - start:.1f} s at {kp.address}")
        web = start_web(kp.address, name, args.web_port) if args.web else None
        try:
            with Client(kp.address, name="demo") as c:
                for d in c.devices():
                    say(f"device {d.name}: {d.description}, {d.capacity_bytes / 2**30:.1f} GiB")
                result = train(c, args)
                say(f"trained: loss {result['first_loss']:.2f} -> {result['last_loss']:.2f}, held-out perplexity "
                    f"{result['perplexity']:.2f}, {result['tokens_per_s']:,.0f} tokens/s")  # fmt: skip
                info = c.model_load(args.device, "tinygpt", checkpoint=CHECKPOINT, kv_blocks=16 * args.procs)
                generate_together(c, args, info)
                if web is not None:
                    try:
                        keep_generating(c, args, info.model, web.url)
                    except KeyboardInterrupt:  # how --web ends; the kernel (its own session) runs on
                        print(flush=True)
                c.model_free(info.model)
                stat = c.stat()
                say(f"3/3 the kernel served {stat.syscalls} syscalls ({stat.errors} errors); shutting down...")
        finally:
            if web is not None:
                web.stop()
    status = kp.popen.returncode
    runtime.remove(kp.dir)
    if args.trace:
        write_trace(config.log_file, args.trace)
    say(f"kernel stopped (status {status}); bye")
    return 0 if status == 0 else 1
