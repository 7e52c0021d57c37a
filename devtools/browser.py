"""A real headless Chromium for the console's browser tests and screenshots: Debian's
``chromium`` and ``chromium-driver`` packages (no browser download), driven with Selenium
(a dev extra).

``ensure_installed()`` installs the packages with apt-get when they are missing (as root on
Debian); ``scripts/run-tests.sh`` asks :func:`missing_packages` first so that one apt-get run
installs them together with PostgreSQL. :func:`headless_chromium` starts a browser,
:func:`screenshot` saves what a page shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from devtools.processes import ServiceError, apt_install

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = {"chromium": CHROMIUM, "chromium-driver": CHROMEDRIVER}


def missing_packages() -> list[str]:
    """The Debian packages of the browser whose executables are not installed."""
    return [package for package, path in PACKAGES.items() if not path.exists()]


def ensure_installed() -> tuple[str, str]:
    """The paths of Chromium and its WebDriver, installing the packages when they are missing.

    Raises:
        ServiceError: they are missing and cannot be installed (not root, no apt-get).
    """
    missing = missing_packages()
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        apt_install(missing)
        missing = missing_packages()
    if missing:
        raise ServiceError(
            f"Chromium not installed: install the Debian packages {' '.join(missing)}"
        )
    return str(CHROMIUM), str(CHROMEDRIVER)


def headless_chromium(*, width: int = 1400, height: int = 1000) -> Any:
    """A Selenium WebDriver on a new headless Chromium (the caller quits it), with the
    browser's console log kept (``driver.get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = ensure_installed()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root (the tests' machines), Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def screenshot(driver: Any, path: Path, *, full_page: bool = True) -> Path:
    """Save what ``driver`` shows as a PNG; ``full_page``: the whole page, not the window."""
    if full_page:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        width = int(driver.execute_script("return document.documentElement.scrollWidth"))
        driver.set_window_size(max(width, 1200), height + 120)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(path)):
        raise ServiceError(f"could not save a screenshot to {path}")
    return path
