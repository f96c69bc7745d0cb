"""Chromium and its ChromeDriver for the browser tests: where they are, and how to get them.

The browser tests drive the operations console in a real headless Chromium through Selenium.
Nothing is downloaded while the tests run (no Selenium Manager, no browser download): they use
the system's `chromium` and `chromedriver`, /usr/bin first, then whatever is on PATH.

`python -m tests.support.browser install` provides them, as the README's test command runs it:
it does nothing when both are there; otherwise it installs Debian's `chromium` and
`chromium-driver` packages with apt-get (through sudo when not root), and exits 2 with what to
install when it cannot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

SYSTEM_BIN = Path("/usr/bin")
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAMES = ("chromedriver",)
PACKAGES = ("chromium", "chromium-driver")
APT_LISTS = Path("/var/lib/apt/lists")

MISSING = (
    "the browser tests need Chromium and ChromeDriver: install the Debian packages "
    f"{' and '.join(PACKAGES)} (`apt-get install {' '.join(PACKAGES)}`), or put `chromium` "
    "and `chromedriver` on PATH; `python -m tests.support.browser install` does it on Debian"
)

# Headless, and quiet: no first-run UI, no update checks, no sync, nothing that reaches out.
CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WINDOW_SIZE = (1280, 900)

Runner = Callable[[Sequence[str]], int]


def find_binary(
    names: Sequence[str], which: Callable[[str], str | None] = shutil.which
) -> Path | None:
    """The first of `names` found in /usr/bin, else on PATH; None when there is none."""
    for name in names:
        candidate = SYSTEM_BIN / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    for name in names:
        found = which(name)
        if found is not None:
            return Path(found)
    return None


def chromium() -> Path | None:
    """The Chromium executable, or None."""
    return find_binary(CHROMIUM_NAMES)


def chromedriver() -> Path | None:
    """The ChromeDriver executable, or None."""
    return find_binary(CHROMEDRIVER_NAMES)


def binaries() -> tuple[Path, Path] | None:
    """(chromium, chromedriver) when both are installed, else None."""
    browser, driver = chromium(), chromedriver()
    return (browser, driver) if browser is not None and driver is not None else None


def start_chrome(
    browser: Path, driver: Path, profile: Path, driver_log: Path | None = None
) -> WebDriver:
    """A headless Chromium on a fresh profile directory, driven through `driver`.

    The caller sets SE_OFFLINE=true: with both paths given Selenium Manager is never asked,
    and offline it could not download anything if it were.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(browser)
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}")
    service = Service(
        executable_path=str(driver),
        log_output=str(driver_log) if driver_log is not None else subprocess.DEVNULL,
    )
    return webdriver.Chrome(service=service, options=options)


# --- install ----------------------------------------------------------------------------


def _run(command: Sequence[str]) -> int:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, check=False).returncode


def _has_package_lists(lists: Path = APT_LISTS) -> bool:
    return lists.is_dir() and any(lists.glob("*_Packages*"))


def install(
    run: Runner = _run,
    find: Callable[[], tuple[Path, Path] | None] = binaries,
    which: Callable[[str], str | None] = shutil.which,
    is_root: bool | None = None,
    has_package_lists: Callable[[], bool] = _has_package_lists,
) -> int:
    """Make sure Chromium and ChromeDriver are installed; the exit status (0, or 2 when they
    are missing and cannot be installed here)."""
    found = find()
    if found is not None:
        print(f"browser: {found[0]} and {found[1]}")
        return 0
    if which("apt-get") is None:
        print(f"error: no apt-get here; {MISSING}", file=sys.stderr)
        return 2
    root = os.geteuid() == 0 if is_root is None else is_root
    if not root and which("sudo") is None:
        print(f"error: not root and no sudo; {MISSING}", file=sys.stderr)
        return 2
    apt = [*([] if root else ["sudo"]), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
    install_packages = [*apt, "install", "-y", "--no-install-recommends", *PACKAGES]
    update = [*apt, "update"]
    if not has_package_lists() and run(update) != 0:
        print(f"error: apt-get update failed; {MISSING}", file=sys.stderr)
        return 2
    if run(install_packages) != 0 and (run(update) != 0 or run(install_packages) != 0):
        print(f"error: apt-get install failed; {MISSING}", file=sys.stderr)
        return 2
    found = find()
    if found is None:
        print(f"error: installed, yet not found; {MISSING}", file=sys.stderr)
        return 2
    print(f"browser: {found[0]} and {found[1]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`install` provides the browser; `where` prints where it is (exit 2 if missing)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["install"]:
        return install()
    if args == ["where"]:
        found = binaries()
        if found is None:
            print(f"error: {MISSING}", file=sys.stderr)
            return 2
        print(f"{found[0]}\n{found[1]}")
        return 0
    print("usage: python -m tests.support.browser install|where", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
