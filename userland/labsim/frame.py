"""The frame every lab simulator prints: ARG lines, the steps, then questions or answers.

A `Run` is what a simulator produced: its arguments, an introduction, the
steps (each an operation and, for -c, the state it left), the questions and
their answers. `render` lays it out the OSTEP way, so each simulator only
computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Step:
    """One operation of the exercise, and what the system made of it (shown with -c)."""

    op: str
    result: list[str] = field(default_factory=list)


@dataclass
class Run:
    """A simulator's exercise: arguments, introduction, steps, questions and answers."""

    args: dict
    intro: list[str]
    steps: list[Step]
    questions: list[str]
    answers: list[str]


def render(run: Run, compute: bool) -> str:
    """The exercise as text: without `compute` the questions, with it each step's result and the answers."""
    lines = [f"ARG {key} {value}" for key, value in run.args.items()]
    lines += ["", *run.intro, ""]
    for i, step in enumerate(run.steps, 1):
        lines.append(f"{i:3}. {step.op}")
        if compute:
            lines += [f"       {text}" for text in step.result]
    lines.append("")
    if compute:
        lines.append("Answers")
        lines += [f"  {text}" for text in run.answers]
    else:
        lines.append("Compute, from the steps above:")
        lines += [f"  {i}. {q}" for i, q in enumerate(run.questions, 1)]
        lines.append("Then run again with -c to check your answers (each step then shows the state it left).")
    return "\n".join(lines)
