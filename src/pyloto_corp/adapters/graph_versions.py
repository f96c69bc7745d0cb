"""Graph API versions and the dates Meta retires them, for a warning before replies stop.

Source: Meta's Graph API changelog, "Available Graph API versions" (release date, available
until): https://developers.facebook.com/docs/graph-api/changelog/versions/ (read 2026-12-07).
A version Meta has not yet dated (the current one) is absent from END_OF_LIFE, as is a
version newer than this table: neither warns.
"""

from __future__ import annotations

from datetime import date

# The version new deployments use: Meta's current one (released 2026-07-29).
CURRENT_VERSION = "v26.0"

# Warn this long before a configured version's end of life.
WARN_DAYS = 90

END_OF_LIFE: dict[str, date] = {
    "v25.0": date(2028, 7, 29),
    "v24.0": date(2028, 2, 18),
    "v23.0": date(2027, 10, 8),
    "v22.0": date(2027, 5, 20),
    "v21.0": date(2027, 1, 21),
    "v20.0": date(2026, 9, 24),
    "v19.0": date(2026, 5, 21),
    "v18.0": date(2026, 1, 26),
    "v17.0": date(2025, 9, 12),
    "v16.0": date(2025, 5, 14),
    "v15.0": date(2024, 11, 20),
}
# Versions older than the table ended before any of it.
_OLDEST_DATED = (15, 0)


def version_warning(version: str, today: date) -> str | None:
    """One line saying the Graph API `version` ends within WARN_DAYS or has ended, else None."""
    end = END_OF_LIFE.get(version)
    if end is None:
        if _number(version) < _OLDEST_DATED:
            return (
                f"WHATSAPP_API_VERSION={version} was retired by Meta before 2024-11-20: "
                f"the Graph API refuses it; set {CURRENT_VERSION}"
            )
        return None
    days = (end - today).days
    if days < 0:
        return (
            f"WHATSAPP_API_VERSION={version} was retired by Meta on {end.isoformat()}: "
            f"the Graph API refuses it; set {CURRENT_VERSION}"
        )
    if days <= WARN_DAYS:
        return (
            f"WHATSAPP_API_VERSION={version} ends on {end.isoformat()} (in {days} days): "
            f"after that Meta refuses it and no reply is sent; set {CURRENT_VERSION}"
        )
    return None


def _number(version: str) -> tuple[int, int]:
    """(major, minor) of 'vMAJOR.MINOR'; versions that don't parse sort as the newest."""
    try:
        major, minor = version.removeprefix("v").split(".")
        return int(major), int(minor)
    except ValueError:
        return (10**6, 0)
