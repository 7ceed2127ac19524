"""Make docs/images/web-console.png: the `llmos web` page during `llmos demo --web`, in headless Chromium.

    .venv/bin/python tests/support/demo_screenshot.py [PNG] [--steps N]

Runs the demo as users run it, waits for its rounds of generating processes,
opens the URL it printed, waits (as the browser test does, with the same
helpers) until four `generate` rows and their KV blocks are on the page and
the timeline has a few seconds of work, saves the whole page, and stops the
demo with SIGTERM (its Ctrl-C).
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402

ROOT = Path(__file__).parents[2]
FOUR_GENERATING = ("[...document.querySelectorAll('#procs tbody tr[data-pid]')]"
                   ".filter(r => r.innerText.includes('generate') && /\\d/.test(r.cells[5].innerText)).length >= 4"
                   " && document.querySelectorAll('.blk.used, .blk.shared').length >= 8")  # fmt: skip


def main() -> int:
    """Run the demo, shoot the page, stop the demo."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("png", nargs="?", default=str(ROOT / "docs" / "images" / "web-console.png"))
    p.add_argument("--steps", type=int, default=800, help="the demo's training steps (default: the demo's own 800)")
    args = p.parse_args()
    if problem := browser.problem():
        sys.exit(f"no browser: {problem}")
    demo = subprocess.Popen([sys.executable, "-m", "llmos.userland.cli.main", "demo", "--web", "--web-port", "0",
                             "--steps", str(args.steps)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = ""
        for line in demo.stdout:
            print(line, end="", flush=True)
            if match := re.search(r"web console: open (http://\S+)", line):
                url = match.group(1)
            if "Ctrl-C ends the demo" in line:
                break
        if not url:
            sys.exit("the demo printed no console URL")
        driver = browser.chromium(width=1400, height=1000)
        try:
            driver.get(url)
            browser.wait_for(driver, FOUR_GENERATING, timeout=60, what="four generating processes and their KV blocks")
            time.sleep(6)  # a few seconds of timeline and utilisation history
            browser.wait_for(driver, FOUR_GENERATING, timeout=60, what="four generating processes again")
            os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
            browser.full_page_screenshot(driver, args.png)
            print(f"wrote {args.png}")
        finally:
            driver.quit()
    finally:
        demo.send_signal(signal.SIGTERM)
        for line in demo.stdout:
            print(line, end="", flush=True)
        demo.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
