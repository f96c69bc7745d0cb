"""The LLM steps' structured outputs as the model returns them, shared by the tests."""

from __future__ import annotations

from typing import Any


def choice(kind: str, body: str, **parts: Any) -> dict[str, Any]:
    """LLM#3's structured output: every field present, those not given null."""
    value: dict[str, Any] = {
        "type": kind,
        "body": body,
        "header": None,
        "footer": None,
        "buttons": None,
        "list_button_text": None,
        "sections": None,
        "cta_display_text": None,
        "cta_url": None,
    }
    value.update(parts)
    return value
