"""Headless Chromium for the `llmos web` tests, through Selenium and Debian's chromedriver.

`problem()` says why there is no browser here (the tests skip with it);
`chromium()` opens one with a fresh profile; `wait_for(driver, script)` polls
a JavaScript predicate in the page. `.ci/run` installs the `chromium` and
`chromium-driver` packages when they are missing.
"""

from __future__ import annotations

import shutil
import tempfile
import time

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")  # fmt: skip


def _binary() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM) if path), None)


def problem() -> str | None:
    """Why no headless browser can run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if _binary() is None:
        return "Chromium is not installed (apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return None


def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium under Selenium with a fresh profile; quit() it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='llmos-chromium-')}")
    options.add_argument(f"--window-size={width},{height}")
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def wait_for(driver, script: str, timeout: float = 30.0, what: str = ""):
    """Poll `return (script)` in the page until it is truthy and return it; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {what or script} in {timeout:.0f} s")
        time.sleep(0.1)


def full_page_screenshot(driver, path: str) -> None:
    """Save the whole page, below the window's fold too, as a PNG (DevTools' Page.captureScreenshot)."""
    import base64

    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
