"""The store's Lua scripts, read from scripts/*.lua when this module is imported.

Each scripts/NAME.lua is one script; it starts with a comment block naming every position of
its KEYS and ARGV. Lua shared by several scripts lives in scripts/include/NAME.lua, and a line
`-- @include NAME` is replaced by that file's text (an include may include others; each is put
in once per script, at its first mention).

The loader also fills in `$NAME` tokens (Lua never writes `$`): the constants of CONSTANTS and,
for the scripts with a declared `Layout` (save, finish: the ones whose arguments run past a
handful), `$keys.NAME` and `$argv.NAME` as the 1-based position of that name in the layout, so
the Python that builds the call and the script agree on one list. A token it does not know
fails the import.

Scripts are loaded into Redis lazily: EVALSHA first, and on NOSCRIPT (a restarted or flushed
Redis) the body again, by redis-py's AsyncScript (SCRIPT LOAD, then EVALSHA) or by the wire
(EVAL, which loads it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from pyloto_corp.adapters.redis.keys import COUNTER_TTL_SECONDS
from pyloto_corp.domain.conversation import AUDIT_KEPT
from pyloto_corp.domain.ops_metrics import DAY, HOUR, MINUTE

# How many aliases follow() goes through before it stops (include/customer.lua).
ALIAS_HOPS = 4

CONSTANTS: dict[str, int] = {
    "MINUTE_TTL": COUNTER_TTL_SECONDS[MINUTE],
    "HOUR_TTL": COUNTER_TTL_SECONDS[HOUR],
    "DAY_TTL": COUNTER_TTL_SECONDS[DAY],
    "ALIAS_HOPS": ALIAS_HOPS,
    "AUDIT_KEPT": AUDIT_KEPT,
}

_INCLUDE = re.compile(r"^-- @include ([a-z_]+)[ \t]*$", re.MULTILINE)
_TOKEN = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)")


@dataclass(frozen=True)
class Layout:
    """The names of a script's KEYS and ARGV, in order; `rest` names the arguments after
    them, of which there may be any number (its position is the first of them)."""

    keys: tuple[str, ...]
    argv: tuple[str, ...]
    rest: str | None = None

    def tokens(self) -> dict[str, int]:
        found = {f"keys.{name}": i for i, name in enumerate(self.keys, 1)}
        found |= {f"argv.{name}": i for i, name in enumerate(self.argv, 1)}
        if self.rest is not None:
            found[f"argv.{self.rest}"] = len(self.argv) + 1
        if len(found) != len(self.keys) + len(self.argv) + (self.rest is not None):
            raise ValueError("a layout names one position twice")
        return found


# A conversation write (domain.writes.ConversationWrite) as include/chat.lua reads it: in
# this order, from its first position.
CHAT_WRITE = (
    "chat_customer_at",
    "chat_message_id",
    "chat_expect_mode",
    "chat_mode",
    "chat_reason",
    "chat_owner",
    "chat_at",
    "chat_agent",
    "chat_audit",
    "chat_expect_newest",
)

# A save's record and its fields, then the console's (include/save.lua): save.lua's whole
# layout, and the frame of finish.lua's.
SAVE_KEYS = ("record", "open_index", "failed_index")
SAVE_ARGV = (
    "expected_version",
    "version",
    "state",
    "outbound_id",
    "data",
    "updated_at",
    "terminal",
    "message_id",
    "failed",
    "instance",
    "conversation",
    "created_at",
    "records_prefix",
    "record_ttl",
)
OPS_KEYS = (
    "updated_index",
    "minute_counters",
    "hour_counters",
    "fallback_reasons",
    "day_counters",
)
OPS_ARGV = ("state_prefix", "fallback_prefix", "fallback_reason", "counters", "amounts")

SAVE = Layout(SAVE_KEYS + OPS_KEYS, SAVE_ARGV + OPS_ARGV)
FINISH = Layout(
    (*SAVE_KEYS, "lease", "next_lease", "bucket", "turns_list", *OPS_KEYS, "chats"),
    (
        *SAVE_ARGV,
        "owner",
        "next_owner",
        "next_lease_ms",
        "bucket_now",
        "per_token",
        "burst",
        "bucket_ttl_ms",
        "turns_window",
        "turns_kept",
        *OPS_ARGV,
        "phone_key",
        "user_key",
        "resolve",
        "conversation_prefix",
        "alias_prefix",
        "alias_ttl",
        "chat",
        "chat_key",
        *CHAT_WRITE,
        "chat_prefix",
        "chat_audit_prefix",
        "chat_mode_prefix",
    ),
    rest="turns",
)
LAYOUTS: dict[str, Layout] = {"save": SAVE, "finish": FINISH}


def folder() -> Traversable:
    """scripts/, inside the installed package."""
    return resources.files("pyloto_corp.adapters.redis").joinpath("scripts")


def names(where: Traversable | None = None) -> list[str]:
    """The name of every script (scripts/*.lua, without the includes)."""
    return sorted(
        entry.name.removesuffix(".lua")
        for entry in (where or folder()).iterdir()
        if entry.is_file() and entry.name.endswith(".lua")
    )


def include_names(where: Traversable | None = None) -> list[str]:
    """The name of every include (scripts/include/*.lua)."""
    return names((where or folder()).joinpath("include"))


def source(name: str, where: Traversable | None = None, include: bool = False) -> str:
    """The text of script `name` (or of include `name`) as its file holds it."""
    base = where or folder()
    path = base.joinpath("include", f"{name}.lua") if include else base.joinpath(f"{name}.lua")
    if not path.is_file():
        kind = "include" if include else "script"
        raise ValueError(f"no Lua {kind} named {name!r}")
    return path.read_text(encoding="utf-8")


def assemble(
    name: str, where: Traversable | None = None, layouts: dict[str, Layout] | None = None
) -> str:
    """Script `name` as Redis runs it: its includes put in, its tokens filled in."""
    seen: set[str] = set()

    def expand(text: str, chain: tuple[str, ...]) -> str:
        def included(match: re.Match[str]) -> str:
            wanted = match.group(1)
            if wanted in chain:
                raise ValueError(f"Lua include cycle: {' -> '.join((*chain, wanted))}")
            if wanted in seen:
                return ""
            seen.add(wanted)
            text = source(wanted, where, include=True)
            return expand(text, (*chain, wanted)).rstrip("\n")

        return _INCLUDE.sub(included, text)

    body = expand(source(name, where), ())
    layout = (LAYOUTS if layouts is None else layouts).get(name)
    tokens: dict[str, int] = {**CONSTANTS, **(layout.tokens() if layout else {})}

    def filled(match: re.Match[str]) -> str:
        token = match.group(1)
        if token not in tokens:
            raise ValueError(f"unknown token ${token} in Lua script {name}")
        return str(tokens[token])

    return _TOKEN.sub(filled, body)


BODIES: dict[str, str] = {name: assemble(name) for name in names()}
