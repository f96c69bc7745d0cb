"""The Redis store's Lua scripts as files: each one loads from the installed package with its
includes put in and its tokens filled, each names its KEYS and ARGV in its header (save and
finish exactly as their Python layouts), and no Lua is left inside Python under src/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyloto_corp.adapters.redis import scripts
from pyloto_corp.adapters.redis.scripts import CHAT_WRITE, FINISH, SAVE, Layout

SRC = Path(__file__).resolve().parents[2] / "src"
FOLDER = SRC / "pyloto_corp" / "adapters" / "redis" / "scripts"
# What Lua looks like and Python never writes.
LUA_TOKENS = re.compile(r"redis\.p?call\(|\bKEYS\[|\bARGV\[|\blocal function\b|error_reply\(")
ENTRY = re.compile(r"^--\s+(\d+)(\+?)\s+([a-z_]+)\s", re.MULTILINE)


def header(text: str) -> str:
    """The comment block a script starts with, up to its first include or line of code."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--") or line.startswith("-- @include"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def declared(text: str, section: str) -> list[tuple[int, bool, str]]:
    """(position, whether any number follow, name) of each entry of a header's section."""
    part = text.split(f"-- {section}\n", 1)[1]
    part = re.split(r"^-- (?:KEYS|ARGV)\b", part, maxsplit=1, flags=re.MULTILINE)[0]
    return [(int(n), bool(more), name) for n, more, name in ENTRY.findall(part)]


def test_the_package_holds_every_script_file_and_loads_each() -> None:
    """The loader reads the scripts from the package (importlib.resources), one body per
    file of scripts/, none left out and none it made up."""
    assert scripts.names() == sorted(path.stem for path in FOLDER.glob("*.lua"))
    assert scripts.include_names() == sorted(path.stem for path in FOLDER.glob("include/*.lua"))
    assert sorted(scripts.BODIES) == scripts.names()
    assert len(scripts.BODIES) >= 12


@pytest.mark.parametrize("name", scripts.names())
def test_a_loaded_script_has_every_include_put_in_and_every_token_filled(name: str) -> None:
    body = scripts.BODIES[name]
    assert "@include" not in body
    assert "$" not in body
    for wanted in re.findall(r"^-- @include ([a-z_]+)", scripts.source(name), re.MULTILINE):
        include = scripts.source(wanted, include=True)
        code = [line for line in include.splitlines() if line and not line.startswith("--")]
        assert code[-1] in body  # the include's last line of code, where it was asked for


def test_every_include_is_used_and_each_is_put_in_once() -> None:
    used = set()
    for name in scripts.names():
        body = scripts.BODIES[name]
        for include in scripts.include_names():
            first = scripts.source(include, include=True).splitlines()[0]
            if first in body:
                used.add(include)
                assert body.count(first) == 1, (name, include)
    assert used == set(scripts.include_names())


def test_the_counter_ttls_and_alias_hops_come_from_python() -> None:
    assert (
        f"local MINUTE_TTL, HOUR_TTL, DAY_TTL = {scripts.CONSTANTS['MINUTE_TTL']}, "
        in (scripts.BODIES["create"])
    )
    assert f"for _ = 1, {scripts.ALIAS_HOPS} do" in scripts.BODIES["finish"]


@pytest.mark.parametrize("name", scripts.names())
def test_every_script_starts_by_naming_its_keys_and_arguments(name: str) -> None:
    top = header(scripts.source(name))
    assert re.search(r"^-- KEYS\b", top, re.MULTILINE), name
    assert re.search(r"^-- ARGV\b", top, re.MULTILINE), name
    assert re.search(r"^-- Returns\b", top, re.MULTILINE), name


@pytest.mark.parametrize(("name", "layout"), [("save", SAVE), ("finish", FINISH)])
def test_a_laid_out_scripts_header_names_the_positions_of_its_python_layout(
    name: str, layout: Layout
) -> None:
    """The header's list of KEYS and ARGV is the layout the Python builds the call from and
    the loader numbers the script's $keys and $argv tokens by."""
    top = header(scripts.source(name))
    assert declared(top, "KEYS") == [(n, False, key) for n, key in enumerate(layout.keys, 1)]
    argv = [(n, False, arg) for n, arg in enumerate(layout.argv, 1)]
    if layout.rest is not None:
        argv.append((len(layout.argv) + 1, True, layout.rest))
    assert declared(top, "ARGV") == argv
    # Every position the script uses is named, not numbered by hand past the fixed ones.
    code = scripts.source(name).split("\n", top.count("\n"))[-1]
    assert not re.findall(r"\b(?:KEYS|ARGV)\[(?:[2-9]|\d\d)\]", code)


def test_the_finish_layout_keeps_the_positions_the_store_builds() -> None:
    """The positions the store's finish_step fills in order: the save's first, then the
    lease, bucket and turns, the console's, the customer's, the conversation's (its write in
    CHAT_WRITE's order, as include/chat.lua reads it from its first), the turns last."""
    assert FINISH.keys[:3] == SAVE.keys[:3]
    assert FINISH.keys[-1] == "chats"
    assert FINISH.argv[:14] == SAVE.argv[:14]
    assert FINISH.argv[23:28] == SAVE.argv[14:]
    first = FINISH.argv.index(CHAT_WRITE[0])
    assert FINISH.argv[first - 2 : first] == ("chat", "chat_key")
    assert FINISH.argv[first : first + len(CHAT_WRITE)] == CHAT_WRITE
    assert FINISH.tokens()["argv.turns"] == 50


def test_no_lua_is_left_inside_python_under_src() -> None:
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if LUA_TOKENS.search(line)
    ]
    assert found == []


def write(root: Path, name: str, text: str) -> None:
    path = root / f"{name}.lua"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_loader_puts_an_include_in_once_even_when_two_ask_for_it(tmp_path: Path) -> None:
    write(tmp_path, "include/base", "local base = 1\n")
    write(tmp_path, "include/more", "-- @include base\nlocal more = base + 1\n")
    write(tmp_path, "main", "-- @include more\n-- @include base\nreturn more + $ALIAS_HOPS\n")
    body = scripts.assemble("main", tmp_path, {})
    assert body == f"local base = 1\nlocal more = base + 1\n\nreturn more + {scripts.ALIAS_HOPS}\n"


def test_the_loader_numbers_named_positions_by_the_layout(tmp_path: Path) -> None:
    write(tmp_path, "main", "return {KEYS[$keys.b], ARGV[$argv.y], ARGV[$argv.rest]}\n")
    layout = Layout(("a", "b"), ("x", "y", "z"), rest="rest")
    assert scripts.assemble("main", tmp_path, {"main": layout}) == (
        "return {KEYS[2], ARGV[2], ARGV[4]}\n"
    )


@pytest.mark.parametrize(
    ("files", "refusal"),
    [
        ({"main": "-- @include nowhere\n"}, "no Lua include named 'nowhere'"),
        ({"main": "return ARGV[$argv.nowhere]\n"}, r"unknown token \$argv.nowhere"),
        (
            {
                "main": "-- @include a\n",
                "include/a": "-- @include b\n",
                "include/b": "-- @include a\n",
            },
            "Lua include cycle: a -> b -> a",
        ),
    ],
    ids=["unknown include", "unknown token", "include cycle"],
)
def test_the_loader_refuses_what_it_cannot_resolve(
    tmp_path: Path, files: dict[str, str], refusal: str
) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ValueError, match=refusal):
        scripts.assemble("main", tmp_path, {})


def test_a_layout_refuses_a_name_given_twice() -> None:
    with pytest.raises(ValueError, match="twice"):
        Layout(("a", "a"), ()).tokens()
