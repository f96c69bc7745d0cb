"""Reply templates from TOML files: the defaults shipped in the package, then the business's
own file (REPLY_TEMPLATES_FILE), whose keys replace those defaults one by one.

Read once, at start-up; any problem stops the start with one line naming the file and the key.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pyloto_corp.config import ConfigError
from pyloto_corp.domain.replies import (
    EVENT_KEY_PREFIX,
    TEMPLATE_PLACEHOLDERS,
    ReplyTemplates,
    template_problem,
)

DEFAULTS_RESOURCE = "reply_templates.toml"
VARIABLE = "REPLY_TEMPLATES_FILE"


def default_templates_text() -> str:
    """The shipped defaults, as the file inside the package holds them."""
    return resources.files("pyloto_corp").joinpath(DEFAULTS_RESOURCE).read_text(encoding="utf-8")


def load_reply_templates(
    path: Path | None, business_name: str, business_hours: str
) -> ReplyTemplates:
    """The shipped templates overridden by those of `path` (if given), checked for the
    business's name and hours; ConfigError on any problem."""
    shipped = f"the shipped {DEFAULTS_RESOURCE}"
    texts = parse_templates(default_templates_text(), shipped, business_name, business_hours)
    missing = sorted(set(TEMPLATE_PLACEHOLDERS) - set(texts))
    if missing:
        raise ConfigError(f"{shipped}: key {missing[0]!r}: missing")
    if path is not None:
        shown = f"{VARIABLE} {path}"
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"{shown}: cannot read it: {error.strerror or error}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{shown}: not UTF-8 (byte {error.start}); save it as UTF-8"
            ) from None
        texts.update(parse_templates(text, shown, business_name, business_hours))
    return ReplyTemplates(texts, business_name, business_hours)


def parse_templates(
    text: str, shown: str, business_name: str, business_hours: str
) -> dict[str, str]:
    """The templates a TOML text holds, by key (`event.greeting` for `[event] greeting`),
    each checked; ConfigError naming `shown` and the key of the first problem."""
    try:
        document = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{shown}: not valid TOML: {error}") from None
    texts: dict[str, str] = {}
    for key, value in _flatten(document, shown):
        problem = template_problem(key, value, business_name, business_hours)
        if problem is not None:
            raise ConfigError(f"{shown}: key {key!r}: {problem}")
        assert isinstance(value, str)  # checked by template_problem
        texts[key] = value
    return texts


def _flatten(document: dict[str, Any], shown: str) -> list[tuple[str, Any]]:
    """(key, value) of every template: top-level keys, and those of the `[event]` table."""
    found: list[tuple[str, Any]] = []
    for key, value in document.items():
        if f"{key}." == EVENT_KEY_PREFIX:
            if not isinstance(value, dict):
                raise ConfigError(f"{shown}: key {key!r}: must be a table ([{key}])")
            found.extend((f"{EVENT_KEY_PREFIX}{name}", text) for name, text in value.items())
        else:
            found.append((key, value))
    return found
