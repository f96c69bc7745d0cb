"""The layers hold: the domain imports only the standard library, `transitions` and msgspec
(and itself); the use cases import no adapter and no HTTP code."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pyloto_corp"
DOMAIN_MAY_IMPORT = frozenset({"transitions", "msgspec"})


def imported_modules(source: str) -> Iterator[str]:
    """Every module an `import` or `from ... import` names, wherever it stands (inside
    functions and `if TYPE_CHECKING:` blocks too); relative imports are not used here."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "pyloto_corp uses absolute imports"
            yield node.module or ""


def domain_violations(source: str) -> list[str]:
    """Imports a domain module may not make."""
    allowed = sys.stdlib_module_names | DOMAIN_MAY_IMPORT
    return [
        module
        for module in imported_modules(source)
        if not (
            module.split(".")[0] in allowed
            or module == "pyloto_corp.domain"
            or module.startswith("pyloto_corp.domain.")
        )
    ]


def application_violations(source: str) -> list[str]:
    """Imports a use case may not make: adapters and HTTP are outside it."""
    banned = ("pyloto_corp.adapters", "pyloto_corp.http")
    return [
        module
        for module in imported_modules(source)
        if any(module == name or module.startswith(f"{name}.") for name in banned)
    ]


def modules(layer: str) -> list[Path]:
    """The layer's source files."""
    found = sorted((PACKAGE / layer).glob("*.py"))
    assert found, layer
    return found


@pytest.mark.parametrize("path", modules("domain"), ids=lambda path: path.name)
def test_the_domain_imports_only_the_standard_library_transitions_and_msgspec(
    path: Path,
) -> None:
    """No domain module imports a framework, a client or another layer."""
    assert domain_violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", modules("application"), ids=lambda path: path.name)
def test_the_use_cases_import_no_adapter_and_no_http(path: Path) -> None:
    """No use case imports an adapter or HTTP code: bootstrap wires them in."""
    assert application_violations(path.read_text(encoding="utf-8")) == []


def test_the_checks_see_imports_wherever_they_stand() -> None:
    """What the rules refuse, at module level, inside a function or for type checking."""
    source = """
import yaml
from typing import TYPE_CHECKING
from pyloto_corp.domain.records import Record
if TYPE_CHECKING:
    from pyloto_corp.adapters.redis.store import RedisStore
def late():
    import litestar.exceptions
    from pyloto_corp.http.app import create_app
"""
    assert domain_violations(source) == [
        "yaml",
        "pyloto_corp.adapters.redis.store",
        "litestar.exceptions",
        "pyloto_corp.http.app",
    ]
    assert application_violations(source) == [
        "pyloto_corp.adapters.redis.store",
        "pyloto_corp.http.app",
    ]
