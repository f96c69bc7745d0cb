"""`python -m tests.support.browser install`: what it runs on a machine with and without the
browser, as root and not, and when apt-get is missing or fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support import browser

INSTALLED = (Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver"))
APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
INSTALL = [*APT, "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"]
UPDATE = [*APT, "update"]


class Machine:
    """A scripted machine: which commands exist, what each apt-get run answers, and whether
    the browser is there (it appears once an install succeeds)."""

    def __init__(
        self, commands: Sequence[str] = ("apt-get",), answers: Sequence[int] = (0,)
    ) -> None:
        self.commands = set(commands)
        self.answers = list(answers)
        self.ran: list[list[str]] = []
        self.installed = False

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.commands else None

    def run(self, command: Sequence[str]) -> int:
        self.ran.append(list(command))
        code = self.answers.pop(0)
        if code == 0 and "install" in command:
            self.installed = True
        return code

    def find(self) -> tuple[Path, Path] | None:
        return INSTALLED if self.installed else None


def install(machine: Machine, root: bool = True, lists: bool = True) -> int:
    return browser.install(
        run=machine.run,
        find=machine.find,
        which=machine.which,
        is_root=root,
        has_package_lists=lambda: lists,
    )


def test_nothing_is_run_when_the_browser_is_there(capsys: pytest.CaptureFixture[str]) -> None:
    machine = Machine()
    machine.installed = True
    assert install(machine) == 0
    assert machine.ran == []
    assert "/usr/bin/chromium" in capsys.readouterr().out


def test_root_installs_the_debian_packages() -> None:
    machine = Machine()
    assert install(machine) == 0
    assert machine.ran == [INSTALL]


def test_a_user_installs_through_sudo() -> None:
    machine = Machine(commands=("apt-get", "sudo"))
    assert install(machine, root=False) == 0
    assert machine.ran == [["sudo", *INSTALL]]


def test_no_package_lists_updates_first() -> None:
    machine = Machine(answers=(0, 0))
    assert install(machine, lists=False) == 0
    assert machine.ran == [UPDATE, INSTALL]


def test_a_failed_install_updates_the_lists_and_tries_again() -> None:
    machine = Machine(answers=(100, 0, 0))
    assert install(machine) == 0
    assert machine.ran == [INSTALL, UPDATE, INSTALL]


@pytest.mark.parametrize(
    ("commands", "root", "answers", "why"),
    [
        ((), True, (), "no apt-get"),
        (("apt-get",), False, (), "not root and no sudo"),
        (("apt-get",), True, (100, 0, 100), "apt-get install failed"),
        (("apt-get",), True, (100, 100), "apt-get install failed"),
    ],
)
def test_exits_2_with_what_to_install_when_it_cannot(
    capsys: pytest.CaptureFixture[str],
    commands: tuple[str, ...],
    root: bool,
    answers: tuple[int, ...],
    why: str,
) -> None:
    machine = Machine(commands=commands, answers=answers)
    assert install(machine, root=root) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert why in line
    assert "chromium and chromium-driver" in line


def test_installed_yet_not_found_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    machine = Machine()
    assert (
        browser.install(run=machine.run, find=lambda: None, which=machine.which, is_root=True) == 2
    )
    assert "not found" in capsys.readouterr().err


def test_binaries_are_looked_up_in_usr_bin_then_on_path(tmp_path: Path) -> None:
    on_path = tmp_path / "chromedriver"
    found = browser.find_binary(["no-such-browser-binary"], which=lambda _: str(on_path))
    assert found == on_path
    assert browser.find_binary(["no-such-browser-binary"], which=lambda _: None) is None
