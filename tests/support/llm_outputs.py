"""The LLM steps' structured outputs as the model returns them, shared by the tests."""

from __future__ import annotations

from typing import Any

# LLM#3's sections of a list message: Saturday morning's hours, the second without a
# description (null, as the model writes a part it leaves out).
SATURDAY_SECTIONS: list[dict[str, Any]] = [
    {
        "title": "Manhã",
        "rows": [
            {"id": "9h", "title": "9h", "description": "Com o Carlos"},
            {"id": "10h", "title": "10h", "description": None},
        ],
    }
]


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
