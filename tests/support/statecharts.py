"""Reading the errors of broken statechart texts, for the loader and lint tests."""

from __future__ import annotations

import pytest

from pyloto_corp.adapters.statechart_yaml import load_statechart
from pyloto_corp.domain.statechart import StatechartError


def line_of(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the `occurrence`-th copy of `fragment`."""
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    return lines[occurrence - 1]


def load_error(text: str, path: str, handlers: dict[str, set[str]]) -> str:
    """The StatechartError message of loading `text` as the file `path`."""
    with pytest.raises(StatechartError) as caught:
        load_statechart(text, path, handlers)
    return str(caught.value)
