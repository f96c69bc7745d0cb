"""WhatsApp's limits on outgoing messages: repair what is safe to repair, else downgrade.

`build_message` turns LLM#3's choice into the `type` part of a Graph API request that
respects every limit; `problems` re-checks a finished request so an invalid payload is never
queued, whatever produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pyloto_corp.ai.schemas import Button, MessageChoice, Section

TEXT_BODY = 4096
# A template's name and language code (Meta: names up to 512 characters; codes like pt_BR).
TEMPLATE_NAME = 512
TEMPLATE_LANGUAGE = 15
INTERACTIVE_BODY = 1024
HEADER = 60
FOOTER = 60
BUTTONS = 3
BUTTON_TITLE = 20
BUTTON_ID = 256
LIST_BUTTON = 20
LIST_ROWS = 10
LIST_SECTIONS = 10
SECTION_TITLE = 24
ROW_TITLE = 24
ROW_DESCRIPTION = 72
ROW_ID = 200
CTA_TEXT = 20


class InvalidMessage(Exception):
    """The choice cannot become a valid message (e.g. an empty body)."""


@dataclass
class Built:
    """A message part ready for the Graph API, and what was changed to get there."""

    message: dict[str, Any]
    repairs: list[str] = field(default_factory=list)
    downgraded_from: str | None = None


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, ending in an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _fit(text: str, limit: int, what: str, repairs: list[str]) -> str:
    fitted = shorten(text, limit)
    if fitted != " ".join(text.split()):
        repairs.append(f"{what} shortened to {limit}")
    return fitted


def text_message(body: str) -> dict[str, Any]:
    """A text message part, cut at WhatsApp's 4096-character limit."""
    body = body.strip()
    if not body:
        raise InvalidMessage("empty body")
    if len(body) > TEXT_BODY:
        cut = body[:TEXT_BODY]
        end = max(cut.rfind(". "), cut.rfind("\n"))
        body = cut[: end + 1] if end > TEXT_BODY // 2 else shorten(body, TEXT_BODY)
    return {"type": "text", "text": {"preview_url": False, "body": body}}


def build_message(choice: MessageChoice, allowed_hosts: frozenset[str]) -> Built:
    """The message part for `choice`, repaired or downgraded to text so it is valid."""
    if not choice.body.strip():
        raise InvalidMessage("empty body")
    repairs: list[str] = []
    try:
        if choice.type == "buttons":
            message = _buttons(choice, repairs)
        elif choice.type == "list":
            message = _list(choice, repairs)
        elif choice.type == "cta_url":
            message = _cta(choice, allowed_hosts, repairs)
        else:
            return Built(text_message(choice.body))
    except _Downgrade as reason:
        built = Built(text_message(choice.body), [str(reason)], downgraded_from=choice.type)
        return built
    return Built(message, repairs)


class _Downgrade(Exception):
    """This choice cannot be repaired safely: send its body as text."""


def _interactive(
    kind: str, choice: MessageChoice, action: dict[str, Any], repairs: list[str]
) -> dict[str, Any]:
    if len(choice.body.strip()) > INTERACTIVE_BODY:
        raise _Downgrade(f"body over {INTERACTIVE_BODY} characters")
    interactive: dict[str, Any] = {"type": kind, "body": {"text": choice.body.strip()}}
    if choice.header and choice.header.strip():
        interactive["header"] = {
            "type": "text",
            "text": _fit(choice.header, HEADER, "header", repairs),
        }
    if choice.footer and choice.footer.strip():
        interactive["footer"] = {"text": _fit(choice.footer, FOOTER, "footer", repairs)}
    interactive["action"] = action
    return {"type": "interactive", "interactive": interactive}


def _buttons(choice: MessageChoice, repairs: list[str]) -> dict[str, Any]:
    buttons: list[Button] = [b for b in choice.buttons or [] if b.title.strip()]
    if not buttons or len(buttons) > BUTTONS:
        raise _Downgrade(f"{len(buttons)} buttons (1 to {BUTTONS} allowed)")
    titles = [_fit(b.title, BUTTON_TITLE, "button title", repairs) for b in buttons]
    ids = _ids([b.id for b in buttons], BUTTON_ID, "button", repairs)
    if len(set(titles)) != len(titles):
        raise _Downgrade("button titles are not unique")
    action = {
        "buttons": [
            {"type": "reply", "reply": {"id": i, "title": t}}
            for i, t in zip(ids, titles, strict=True)
        ]
    }
    return _interactive("button", choice, action, repairs)


def _ids(raw: list[str], limit: int, what: str, repairs: list[str]) -> list[str]:
    ids = [r.strip()[:limit] or f"{what}-{n + 1}" for n, r in enumerate(raw)]
    if len(set(ids)) != len(ids) or ids != [r.strip() for r in raw]:
        ids = [f"{what}-{n + 1}" for n in range(len(raw))]
        repairs.append(f"{what} ids replaced")
    return ids


def _list(choice: MessageChoice, repairs: list[str]) -> dict[str, Any]:
    sections: list[Section] = [s for s in choice.sections or [] if s.rows]
    rows = [row for section in sections for row in section.rows]
    if not rows or len(rows) > LIST_ROWS or len(sections) > LIST_SECTIONS:
        raise _Downgrade(f"{len(rows)} rows in {len(sections)} sections (1 to {LIST_ROWS} rows)")
    ids = iter(_ids([row.id for row in rows], ROW_ID, "row", repairs))
    built_sections = []
    for number, section in enumerate(sections, start=1):
        built: dict[str, Any] = {"rows": []}
        if len(sections) > 1 or (section.title and section.title.strip()):
            title = (
                section.title.strip()
                if section.title and section.title.strip()
                else f"Opções {number}"
            )
            built["title"] = _fit(title, SECTION_TITLE, "section title", repairs)
        for row in section.rows:
            item = {"id": next(ids), "title": _fit(row.title, ROW_TITLE, "row title", repairs)}
            if row.description and row.description.strip():
                item["description"] = _fit(
                    row.description, ROW_DESCRIPTION, "row description", repairs
                )
            built["rows"].append(item)
        built_sections.append(built)
    button = _fit(choice.list_button_text or "Ver opções", LIST_BUTTON, "list button", repairs)
    return _interactive("list", choice, {"button": button, "sections": built_sections}, repairs)


def _cta(
    choice: MessageChoice, allowed_hosts: frozenset[str], repairs: list[str]
) -> dict[str, Any]:
    url = (choice.cta_url or "").strip()
    parts = urlsplit(url)
    if parts.scheme != "https" or (parts.hostname or "") not in allowed_hosts:
        raise _Downgrade("CTA URL is not an https link to the business's own site")
    text = _fit(choice.cta_display_text or "Abrir", CTA_TEXT, "CTA text", repairs)
    action = {"name": "cta_url", "parameters": {"display_text": text, "url": url}}
    return _interactive("cta_url", choice, action, repairs)


def problems(body: dict[str, Any]) -> list[str]:
    """Every WhatsApp limit a finished request body breaks (empty when it is valid)."""
    kind = body.get("type")
    if kind == "text":
        text = body.get("text", {}).get("body", "")
        return [] if 0 < len(text) <= TEXT_BODY else ["text body length"]
    if kind == "template":
        return _template_problems(body.get("template", {}))
    if kind != "interactive":
        return [f"unsupported type {kind!r}"]
    return _interactive_problems(body.get("interactive", {}))


def _template_problems(template: dict[str, Any]) -> list[str]:
    """An approved template is named by its name and language code (Meta checks the rest:
    that it is approved and its parameters match)."""
    found = []
    if not _within(template.get("name"), TEMPLATE_NAME):
        found.append("template name length")
    if not _within(template.get("language", {}).get("code"), TEMPLATE_LANGUAGE):
        found.append("template language code")
    return found


def _interactive_problems(interactive: dict[str, Any]) -> list[str]:
    found = []
    if not 0 < len(interactive.get("body", {}).get("text", "")) <= INTERACTIVE_BODY:
        found.append("interactive body length")
    if len(interactive.get("header", {}).get("text", "")) > HEADER:
        found.append("header length")
    if len(interactive.get("footer", {}).get("text", "")) > FOOTER:
        found.append("footer length")
    check = _ACTION_CHECKS.get(str(interactive.get("type")))
    if check is None:
        return [*found, f"unsupported interactive type {interactive.get('type')!r}"]
    return found + check(interactive.get("action", {}))


def _within(value: Any, limit: int, empty_ok: bool = False) -> bool:
    length = len(value) if isinstance(value, str) else -1
    return (0 if empty_ok else 1) <= length <= limit


def _button_problems(action: dict[str, Any]) -> list[str]:
    buttons = action.get("buttons", [])
    found = [] if 0 < len(buttons) <= BUTTONS else ["button count"]
    for button in buttons:
        reply = button.get("reply", {})
        if not (_within(reply.get("title"), BUTTON_TITLE) and _within(reply.get("id"), BUTTON_ID)):
            found.append("button title or id")
    return found


def _list_problems(action: dict[str, Any]) -> list[str]:
    sections = action.get("sections", [])
    rows = [row for section in sections for row in section.get("rows", [])]
    found = [] if 0 < len(rows) <= LIST_ROWS and len(sections) <= LIST_SECTIONS else ["list rows"]
    if not _within(action.get("button"), LIST_BUTTON):
        found.append("list button")
    for row in rows:
        if not (
            _within(row.get("title"), ROW_TITLE)
            and _within(row.get("description", ""), ROW_DESCRIPTION, empty_ok=True)
            and _within(row.get("id"), ROW_ID)
        ):
            found.append("row title, description or id")
    return found


def _cta_problems(action: dict[str, Any]) -> list[str]:
    parameters = action.get("parameters", {})
    url = parameters.get("url")
    if _within(parameters.get("display_text"), CTA_TEXT) and str(url).startswith("https://"):
        return []
    return ["cta parameters"]


_ACTION_CHECKS = {"button": _button_problems, "list": _list_problems, "cta_url": _cta_problems}
