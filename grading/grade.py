"""`make grade`: run the graders of the four assignments and print a score per assignment.

    python grading/grade.py                 # grade the tree as it is (your work)
    python grading/grade.py --solutions     # grade a copy of the tree with the reference solutions in
    python grading/grade.py stride cow      # only some assignments
    python grading/grade.py --quick         # leave out the driver kit's kernel tests (seconds, not tens)

Each assignment's grader is one pytest file in grading/graders/; all run in
one pytest process, in the tree being graded, with that tree's code imported
as `llmos` (a copy of the tree shadows the installed one through PYTHONPATH).
The reference solutions live in grading/solutions/, which no grader imports:
`--solutions` copies the tree to a temporary folder and puts them in there
(a solution of a skeleton in assignments/ replaces it, the skeleton moved
aside as NAME_skeleton.py; the syscall's solution edits the copy's files),
so the working tree is never touched.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOP_LEVEL = ("syscalls", "kernel", "services", "drivers", "userland", "benchmarks", "testing")
ASSIGNMENTS = {  # name -> (number, what, grader module)
    "dup": (1, "the dup syscall, end to end", "test_dup"),
    "stride": (2, "a stride-scheduling policy", "test_stride"),
    "capdriver": (3, "a driver with a capacity", "test_capdriver"),
    "cow": (4, "copy-on-write on append", "test_cow"),
}
SKIP = shutil.ignore_patterns(".venv", ".git", "site", "build", "__pycache__", ".hypothesis", ".pytest_cache",
                              "*.egg-info")


def with_solutions(tmp: pathlib.Path) -> pathlib.Path:
    """A copy of the tree in `tmp` with every reference solution put in; its root."""
    tree = tmp / "tree"
    shutil.copytree(ROOT, tree, ignore=SKIP, symlinks=True)
    for name in ASSIGNMENTS:
        solution = ROOT / "grading" / "solutions" / f"{name}.py"
        skeleton = tree / "assignments" / f"{name}.py"
        if skeleton.exists():
            skeleton.rename(skeleton.with_name(f"{name}_skeleton.py"))
            shutil.copy(solution, skeleton)
        else:  # a solution that changes the system: it edits the copy
            spec = importlib.util.spec_from_file_location(f"solution_{name}", solution)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.apply(tree)
    return tree


def environment(tree: pathlib.Path, tmp: pathlib.Path, quick: bool) -> dict:
    """The graders' environment: `llmos` (and `assignments`) imported from `tree`."""
    env = dict(os.environ)
    paths = [str(tree)]
    if tree != ROOT:  # shadow the installed llmos (an editable install of ROOT) with the copy's folders
        shadow = tmp / "shadow" / "llmos"
        shadow.mkdir(parents=True)
        for top in TOP_LEVEL:
            (shadow / top).symlink_to(tree / top)
        paths.insert(0, str(shadow.parent))
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("LLMOS_PLUGINS", None)  # the graders say which plugins they need
    if quick:
        env["GRADE_QUICK"] = "1"
    return env


def run_graders(tree: pathlib.Path, names: list[str], tmp: pathlib.Path, quick: bool) -> dict[str, list]:
    """Run the graders of `names` on `tree`; per assignment, a list of (test, failure message or None)."""
    report = tmp / "report.xml"
    files = [f"grading/graders/{ASSIGNMENTS[n][2]}.py" for n in names]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-o", "addopts=",
               f"--junitxml={report}", *files]
    if quick:
        command += ["-k", "not kernel"]
    subprocess.run(command, cwd=tree, env=environment(tree, tmp, quick), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=900)
    results: dict[str, list] = {n: [] for n in names}
    if not report.exists():
        return results
    for case in ET.parse(report).iter("testcase"):
        name = next((n for n in names if f".{ASSIGNMENTS[n][2]}" in case.get("classname", "")), None)
        if name is None or case.find("skipped") is not None:
            continue
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        message = None if problem is None else (problem.get("message") or "failed").splitlines()[0]
        results[name].append((case.get("name"), message))
    return results


def first_reason(outcomes: list) -> str:
    """The most telling failure: one that says the assignment is not done, else the first."""
    messages = [message for _, message in outcomes if message]
    for message in messages:
        if "assignment" in message and "not done" in message:
            return message[message.index("assignment"):]
    return messages[0] if messages else "no test ran: is the grader file there?"


def main(argv: list[str] | None = None) -> int:
    """Grade, print one line per assignment and the score; 0 unless grading itself could not run."""
    parser = argparse.ArgumentParser(prog="grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("assignments", nargs="*", choices=[[], *ASSIGNMENTS], metavar="NAME",
                        help=f"assignments to grade: {', '.join(ASSIGNMENTS)} (default all)")
    parser.add_argument("--solutions", action="store_true", help="grade a copy of the tree with the references in")
    parser.add_argument("--quick", action="store_true", help="leave out the driver kit's kernel tests")
    args = parser.parse_args(argv)
    names = args.assignments or list(ASSIGNMENTS)
    with tempfile.TemporaryDirectory(prefix="llmos-grade-") as tmp_name:
        tmp = pathlib.Path(tmp_name)
        try:
            tree = with_solutions(tmp) if args.solutions else ROOT
        except (OSError, ValueError) as exc:
            print(f"grade: could not put the reference solutions in: {exc}", file=sys.stderr)
            return 2
        print(f"Grading {'the reference solutions' if args.solutions else 'your tree'}"
              + (" (quick: no kernel tests of the driver kit)" if args.quick else ""))
        results = run_graders(tree, names, tmp, args.quick)
    done = 0
    for name in names:
        number, what, _ = ASSIGNMENTS[name]
        outcomes = results[name]
        passed = sum(1 for _, message in outcomes if message is None)
        ok = bool(outcomes) and passed == len(outcomes)
        done += ok
        line = f"  {number}. {name:10} {what:30} {passed:2}/{len(outcomes):<2} tests  {'PASS' if ok else 'FAIL'}"
        print(line if ok else f"{line}  {first_reason(outcomes)}")
    print(f"Score: {done}/{len(names)} assignments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
