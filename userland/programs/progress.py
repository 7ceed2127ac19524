"""Live progress displays: a bar redrawn in place on a terminal, plain lines in a log.

On a tty the line is rewritten with "\\r" after every step. When stdout is not
a tty (a program the kernel spawned writes to a log that `llmos run` relays)
carriage returns would pile up, so a plain line is printed every few seconds
instead. `Progress` shows how far a training run is (steps or minutes,
whichever ends it first), the smoothed loss, tokens per second and the time
left; `Ticker` shows that one long call (a model_quantize) is still running,
and for how long.
"""

import sys
import threading
import time
from typing import TextIO

BAR = 24
SMOOTHING = 0.9
"""Weight of the old value in the loss's exponential moving average."""


def clock(seconds: float) -> str:
    """Seconds as m:ss (or h:mm:ss)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class Progress:
    """Where a training run is. `steps` and `seconds` are its limits (None: no such limit).

    `first_step` is the step count it starts from (a resumed run; `steps` counts from 0, so
    the bar shows where the whole training is), `tokens_per_step` what one step reads,
    `every_s` how often a plain line is printed when the output is not a tty.
    """

    def __init__(self, steps: int | None, seconds: float | None, first_step: int, tokens_per_step: int,
                 out: TextIO | None = None, every_s: float = 5.0):  # fmt: skip
        self.steps, self.seconds = steps, seconds
        self.first_step, self.tokens_per_step = first_step, tokens_per_step
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.every_s = every_s
        self.start = time.monotonic()
        self.last_line = self.start
        self.loss: float | None = None
        self.step = first_step

    def fraction(self) -> float:
        """How much of the run is done, 0..1: the larger of the step and time fractions."""
        done = self.step / self.steps if self.steps else 0.0
        if self.seconds:
            done = max(done, self.elapsed() / self.seconds)
        return min(done, 1.0)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.start

    def tokens_per_s(self) -> float:
        """Tokens read per second of wall time so far."""
        return (self.step - self.first_step) * self.tokens_per_step / max(self.elapsed(), 1e-9)

    def eta(self) -> float | None:
        """Seconds left at the pace so far: to the last step or the time limit, whichever comes first."""
        left = []
        done = self.step - self.first_step
        if self.steps and done:
            left.append((self.steps - self.step) * self.elapsed() / done)
        if self.seconds:
            left.append(self.seconds - self.elapsed())
        return max(min(left), 0.0) if left else None

    def update(self, step: int, loss: float) -> None:
        """Record a finished step and its loss; redraw (tty) or print a line if it is time."""
        self.step = step
        self.loss = loss if self.loss is None else SMOOTHING * self.loss + (1 - SMOOTHING) * loss
        now = time.monotonic()
        if self.tty:
            done = int(self.fraction() * BAR)
            self.out.write(f"\r[{'#' * done}{'.' * (BAR - done)}] {self.status()}  ")
            self.out.flush()
        elif now - self.last_line >= self.every_s:
            self.last_line = now
            print(self.status(), file=self.out, flush=True)

    def status(self) -> str:
        """One line: progress, smoothed loss, tokens/s, ETA."""
        where = f"step {self.step}" + (f"/{self.steps}" if self.steps else "")
        if self.seconds:
            where += f"  {clock(self.elapsed())}/{clock(self.seconds)}"
        eta = self.eta()
        eta_text = "?" if eta is None else clock(eta)
        loss = "?" if self.loss is None else f"{self.loss:.3f}"
        return f"{where}  loss {loss}  {self.tokens_per_s():,.0f} tok/s  ETA {eta_text}"

    def close(self) -> None:
        """End the display: finish the tty line."""
        if self.tty:
            self.out.write("\n")
            self.out.flush()


class Ticker:
    """While a `with` block runs one long call: "WHAT... 12 s", redrawn every second on a tty, a plain line
    every `every_s` seconds otherwise; on leaving, "WHAT: N s"."""

    def __init__(self, what: str, out: TextIO | None = None, every_s: float = 5.0):
        self.what = what
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.every_s = every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)
        self.start = time.monotonic()

    def _tick(self) -> None:
        """Redraw (tty) or print a line (log) until stopped."""
        while not self.stop.wait(1.0 if self.tty else self.every_s):
            elapsed = clock(time.monotonic() - self.start)
            if self.tty:
                self.out.write(f"\r{self.what}... {elapsed}  ")
                self.out.flush()
            else:
                print(f"{self.what}... {elapsed}", file=self.out, flush=True)

    def __enter__(self) -> "Ticker":
        if self.tty:
            self.out.write(f"{self.what}...")
            self.out.flush()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        line = f"{self.what}: {time.monotonic() - self.start:.1f} s"
        print(f"\r{line}   " if self.tty else line, file=self.out, flush=True)
