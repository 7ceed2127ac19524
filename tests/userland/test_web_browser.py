"""`llmos web` in a real browser: headless Chromium watches two generating processes and switches a policy.

The command runs as users run it (`llmos web --kernel shared --port 0`, URL
with token read from its output); the page must show both processes' rows
and their KV blocks, and its policy switch must change what `sched_get`
answers. The screenshot is kept (its path is printed; -s shows it).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

import browser  # tests/support
from llmos.userland import Client

pytestmark = pytest.mark.skipif(browser.problem() is not None, reason=str(browser.problem()))

TINY = dict(d_model=32, n_layers=1, n_heads=2, max_len=64)


@pytest.fixture
def console(kernel):
    """`llmos web` on the shared kernel, as a command; yields its URL (with the token)."""
    proc = subprocess.Popen([sys.executable, "-m", "llmos.userland.cli.main", "web", "--kernel", "shared", "--port", "0",
                             "--interval", "0.3"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = ""
        for line in proc.stdout:
            if match := re.search(r"open (http://\S+)", line):
                url = match.group(1)
                break
        assert url.startswith("http://127.0.0.1:") and "?token=" in url, "llmos web printed no URL"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_page_shows_two_generating_processes_and_switches_the_policy(kernel, console, tmp_path):
    with Client(kernel.address, name="browser-test") as c:
        model = c.model_load("cpu", "tinygpt", config=TINY, kv_blocks=16)
        opts = ["--model", str(model.model), "--max-tokens", "40", "--for", "60"]
        gens = [c.spawn("generate", opts + ["--prompt", prompt], models=[model.model]) for prompt in ("def ", "class ")]
        driver = browser.chromium()
        try:
            driver.get(console)
            for g in gens:
                browser.wait_for(driver, f"document.querySelector('#procs tr[data-pid=\"{g.pid}\"]')", what=f"pid {g.pid}'s row")
                browser.wait_for(driver, f"document.querySelectorAll('.blk[data-pid=\"{g.pid}\"]').length > 0",
                                 what=f"pid {g.pid}'s KV blocks")  # fmt: skip
            row = driver.execute_script(f"return document.querySelector('#procs tr[data-pid=\"{gens[0].pid}\"]').innerText")
            assert "generate" in row and "running" in row
            assert c.sched("cpu0").policy == "fcfs"
            driver.execute_script("const s = document.querySelector('select.policy-select[data-device=\"cpu0\"]');"
                                  "s.value = 'rr'; document.querySelector('button.policy-apply[data-device=\"cpu0\"]').click();")
            browser.wait_for(driver, "document.querySelector('.sched-dev[data-device=\"cpu0\"] .current').textContent === 'rr'",
                             what="the policy rr")  # fmt: skip
            assert c.sched("cpu0").policy == "rr"
            browser.wait_for(driver, "document.getElementById('live').className === 'dot on'", what="a live connection")
            shot = tmp_path / "llmos-web.png"
            browser.full_page_screenshot(driver, str(shot))
            print(f"screenshot: {shot}")
            if os.environ.get("LLMOS_WEB_SCREENSHOT"):  # CI keeps it as an artifact
                shutil.copy(shot, os.environ["LLMOS_WEB_SCREENSHOT"])
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        finally:
            driver.quit()
            c.sched_set("cpu0", "fcfs")
            for g in gens:
                c.kill(g.pid)
            c.model_free(model.model)
