"""The Graph API version: a current default, and a warning before Meta retires the one in use."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from pyloto_corp.adapters.graph_versions import (
    CURRENT_VERSION,
    END_OF_LIFE,
    WARN_DAYS,
    version_warning,
)
from pyloto_corp.config import load_settings


def test_the_default_version_is_the_current_one_and_not_dated_for_retirement() -> None:
    """With no WHATSAPP_API_VERSION, replies go to v26.0 or newer, which Meta has not dated."""
    configured = load_settings({}).whatsapp.api_version
    assert configured == CURRENT_VERSION
    major = int(configured.removeprefix("v").split(".")[0])
    assert major >= 25
    assert version_warning(configured, date(2026, 12, 7)) is None


def test_a_version_within_ninety_days_of_its_end_warns_with_the_date_and_the_fix() -> None:
    """v21.0 ends on 2027-01-21: 45 days before, one line names the variable, the date, the
    days left and the version to set."""
    warning = version_warning("v21.0", date(2026, 12, 7))
    assert warning is not None
    assert "\n" not in warning
    assert "WHATSAPP_API_VERSION=v21.0" in warning
    assert "2027-01-21" in warning
    assert "in 45 days" in warning
    assert CURRENT_VERSION in warning


@pytest.mark.parametrize("version", sorted(END_OF_LIFE))
def test_every_dated_version_warns_from_ninety_days_before_its_end_and_not_earlier(
    version: str,
) -> None:
    """The warning starts exactly WARN_DAYS before the end of life, and not a day sooner."""
    end = END_OF_LIFE[version]
    assert version_warning(version, end - timedelta(days=WARN_DAYS + 1)) is None
    first = version_warning(version, end - timedelta(days=WARN_DAYS))
    assert first is not None
    assert f"in {WARN_DAYS} days" in first


@pytest.mark.parametrize(
    ("version", "today", "ended"),
    [
        ("v21.0", date(2027, 1, 22), "2027-01-21"),
        ("v20.0", date(2026, 12, 7), "2026-09-24"),
        ("v12.0", date(2026, 12, 7), "before 2024-11-20"),
    ],
)
def test_a_retired_version_says_meta_refuses_it(version: str, today: date, ended: str) -> None:
    """A version past its end of life (dated, or older than the table) says it was retired."""
    warning = version_warning(version, today)
    assert warning is not None
    assert "retired" in warning
    assert ended in warning


@pytest.mark.parametrize("version", ["v26.0", "v27.0", "v30.1"])
def test_undated_and_newer_versions_do_not_warn(version: str) -> None:
    """The current version and any newer than the table have no end of life to warn about."""
    assert version_warning(version, date(2027, 6, 1)) is None
