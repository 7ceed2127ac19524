"""`make grade` works both ways: the untouched tree fails every assignment with a clear reason, the
reference solutions pass every one.

Both runs are quick (`--quick`: the driver kit's kernel tests are left out), each one pytest process.
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).parents[2]


def grade(*args: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "grading" / "grade.py"), "--quick", *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def rows(text: str) -> dict[str, str]:
    return dict(re.findall(r"^  \d\. (\w+) .*? (PASS|FAIL)", text, re.M))


def test_the_untouched_tree_fails_each_assignment_and_says_why():
    text = grade()
    assert rows(text) == dict.fromkeys(["dup", "stride", "capdriver", "cow"], "FAIL")
    for number in range(1, 5):
        assert re.search(rf"^  {number}\. .*FAIL  assignment {number} is not done: ", text, re.M), text
    assert "Score: 0/4 assignments" in text


def test_the_reference_solutions_pass_every_assignment():
    text = grade("--solutions")
    assert rows(text) == dict.fromkeys(["dup", "stride", "capdriver", "cow"], "PASS"), text
    assert "Score: 4/4 assignments" in text
    assert not (ROOT / "assignments" / "cow_skeleton.py").exists()  # the working tree was not touched
