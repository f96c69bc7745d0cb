"""The Makefile, the pre-commit hooks and .ci/run run the same checks, and the version the
changelog names is the package's."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.support.helpers import REPO


def recipe(target: str) -> list[str]:
    """The command lines of a Makefile target, in order."""
    lines = (REPO / "Makefile").read_text(encoding="utf-8").splitlines()
    start = lines.index(f"{target}:") + 1
    commands = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        commands.append(line.removeprefix("\t"))
    return commands


def ci_lines() -> list[str]:
    """The command lines of .ci/run (comments and blanks left out)."""
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def contiguous(block: list[str], lines: list[str]) -> bool:
    """Whether `block` appears in `lines` as consecutive lines, in order."""
    return any(lines[i : i + len(block)] == block for i in range(len(lines)))


def test_make_lint_runs_what_ci_runs() -> None:
    """`make lint` is .ci/run's lint block, line for line, drift checks included."""
    lint = recipe("lint")
    assert ".venv/bin/pyloto statecharts check" in lint
    assert ".venv/bin/pyloto config docs --check" in lint
    assert ".venv/bin/pyloto docs architecture --check" in lint
    assert contiguous(lint, ci_lines())


def test_make_bench_smoke_runs_what_ci_runs() -> None:
    """`make bench-smoke` is .ci/run's benchmark block, line for line."""
    bench = recipe("bench-smoke")
    assert len(bench) >= 9
    assert contiguous(bench, ci_lines())


def test_make_test_is_the_readme_command_without_the_install() -> None:
    """`make test` runs the README's test command's pytest, as CI does."""
    assert recipe("test") == [".venv/bin/pytest"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "&& .venv/bin/pytest\n```" in readme


def test_make_docs_regenerates_what_each_drift_check_compares() -> None:
    """`make docs` runs the render of every `--check` (or `check`) line of `make lint`."""
    docs = recipe("docs")
    assert ".venv/bin/pyloto statecharts render" in docs
    for line in recipe("lint"):
        if line.startswith(".venv/bin/pyloto ") and line.endswith("--check"):
            assert line.removesuffix(" --check") in docs, line


def test_pre_commit_hooks_are_local_and_run_the_lint_checks() -> None:
    """Every hook is a local, system one (nothing downloaded), and together they run ruff,
    the type check and every drift check with the commands `make lint` runs."""
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert {repo["repo"] for repo in config["repos"]} == {"local"}
    assert {hook["language"] for hook in hooks} == {"system"}
    lint = recipe("lint")
    entries = [hook["entry"] for hook in hooks]
    for command in (
        ".venv/bin/ruff check",
        ".venv/bin/ruff format --check",
        ".venv/bin/mypy --strict src",
        ".venv/bin/pyloto statecharts check",
        ".venv/bin/pyloto config docs --check",
        ".venv/bin/pyloto docs architecture --check",
    ):
        assert any(entry.startswith(command) for entry in entries), command
        assert any(line.startswith(command) for line in lint), command


def test_the_changelog_names_the_package_version() -> None:
    """CHANGELOG.md's newest release is pyproject's version, under Keep a Changelog headings."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "version"
    ]
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert releases[0] == version
    assert releases[-1] == "0.1.0"
