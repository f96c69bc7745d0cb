"""Structured outputs: the strict schema built from the pydantic models, the request of each
mode, and the JSON read back from answers that wrap it."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from pyloto_corp.ai.schemas import EventDetection, ImageDescription, MessageChoice, ReplyDraft
from pyloto_corp.ai.structured import (
    MODES,
    instruction,
    json_text,
    request_fields,
    strict_schema,
    weaker,
)
from tests.support.llm_outputs import SATURDAY_SECTIONS, choice

MODELS = [EventDetection, ReplyDraft, MessageChoice, ImageDescription]
MESSAGES = [
    {"role": "system", "content": "Você classifica mensagens."},
    {"role": "user", "content": "Quanto custa?"},
]


def objects(node: Any) -> list[dict[str, Any]]:
    """Every object schema in `node`, nested ones included."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += objects(value)
    elif isinstance(node, list):
        for item in node:
            found += objects(item)
    return found


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_the_strict_schema_closes_every_object_and_requires_every_property(
    model: type[pydantic.BaseModel],
) -> None:
    """Strict structured outputs refuse an open object or an optional property: every object,
    nested ones too, is closed and requires all its properties; no reference is left."""
    schema = strict_schema(model)
    assert schema["title"] == model.__name__
    assert list(schema["properties"]) == list(model.model_fields)
    for node in objects(schema):
        assert node["additionalProperties"] is False
        assert node["required"] == list(node["properties"])
    text = json.dumps(schema)
    assert "$ref" not in text
    assert "$defs" not in text


def test_nested_models_are_inlined_where_they_are_used() -> None:
    """LLM#3's buttons and list sections carry their own schemas in place of references."""
    schema = strict_schema(MessageChoice)
    buttons = schema["properties"]["buttons"]["anyOf"][0]["items"]
    assert buttons["title"] == "Button"
    assert buttons["required"] == ["id", "title"]
    rows = schema["properties"]["sections"]["anyOf"][0]["items"]["properties"]["rows"]
    assert rows["items"]["required"] == ["id", "title", "description"]


def test_the_schema_keeps_the_models_constraints() -> None:
    """The limits a validator checks are also told to the model."""
    schema = strict_schema(EventDetection)
    assert schema["properties"]["confidence"]["maximum"] == 1
    assert schema["properties"]["summary"]["maxLength"] == 200
    assert "opt_out" in schema["properties"]["event"]["enum"]


def test_a_recursive_model_is_refused_with_its_name() -> None:
    """A model that contains itself has no inlined schema: a clear error, at build time."""

    class Node(pydantic.BaseModel):
        children: list[Node]

    with pytest.raises(ValueError, match="recursive schema through Node"):
        strict_schema(Node)


def test_json_schema_mode_sends_the_strict_schema_by_name_and_the_messages_as_they_are() -> None:
    """Strict mode: the schema goes in `response_format.json_schema`, the prompt unchanged."""
    fields = request_fields(MESSAGES, EventDetection, "json_schema")
    assert fields == {
        "messages": MESSAGES,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "EventDetection",
                "schema": strict_schema(EventDetection),
                "strict": True,
            },
        },
    }


def test_json_object_mode_sends_the_schema_beside_the_format_and_in_the_system_prompt() -> None:
    """llama.cpp's form: `{"type": "json_object", "schema": ...}`; the system prompt carries
    the schema too, for servers that ignore the field; the user's message is untouched."""
    fields = request_fields(MESSAGES, EventDetection, "json_object")
    assert fields["response_format"] == {
        "type": "json_object",
        "schema": strict_schema(EventDetection),
    }
    system, user = fields["messages"]
    assert system["content"].startswith("Você classifica mensagens.\n\n")
    assert system["content"].endswith(instruction(EventDetection))
    assert user == MESSAGES[1]
    assert MESSAGES[0]["content"] == "Você classifica mensagens.", "the input is not changed"


def test_prompt_mode_sends_no_format_and_the_schema_in_the_prompt() -> None:
    """Prompt mode: no `response_format` at all; the schema, as JSON, in the system prompt."""
    fields = request_fields(MESSAGES, ReplyDraft, "prompt")
    assert set(fields) == {"messages"}
    system = fields["messages"][0]["content"]
    assert "JSON" in system
    schema_text = system[system.index("{") :]
    assert json.loads(schema_text) == strict_schema(ReplyDraft)


def test_a_conversation_without_a_system_prompt_gets_one_with_the_schema() -> None:
    """No system message to extend: the instruction opens the conversation."""
    user = {"role": "user", "content": "Oi"}
    fields = request_fields([user], ReplyDraft, "prompt")
    assert fields["messages"] == [
        {"role": "system", "content": instruction(ReplyDraft)},
        user,
    ]


def test_auto_steps_down_from_strict_to_prompt_and_no_further() -> None:
    """json_schema → json_object → prompt → nothing weaker."""
    assert MODES == ("json_schema", "json_object", "prompt")
    assert weaker("json_schema") == "json_object"
    assert weaker("json_object") == "prompt"
    assert weaker("prompt") is None


OBJECT = '{"text": "Olá! O corte custa R$ 50."}'


@pytest.mark.parametrize(
    "answer",
    [
        OBJECT,
        f"  {OBJECT}\n",
        f"```json\n{OBJECT}\n```",
        f"```\n{OBJECT}\n```",
        f"Claro! Segue a resposta:\n```json\n{OBJECT}\n```\nPosso ajudar em algo mais?",
        f"Aqui está: {OBJECT} Espero ter ajudado.",
    ],
    ids=["bare", "spaces", "json-fence", "plain-fence", "prose-and-fence", "prose"],
)
def test_the_object_is_read_out_of_prose_and_fences(answer: str) -> None:
    """A JSON object wrapped in prose or a code fence validates as the bare object does."""
    assert ReplyDraft.model_validate_json(json_text(answer)).text == "Olá! O corte custa R$ 50."


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        ("Desculpe, não entendi.", "json_invalid"),
        ('{"text": "Olá', "json_invalid"),
        ('Resposta: {"texto": "Olá"}', "missing"),
    ],
    ids=["no-object", "cut-short", "wrong-fields"],
)
def test_what_is_not_the_object_still_fails_validation(answer: str, error_type: str) -> None:
    """Tolerance finds the object; it never invents one: no JSON stays unparsable, the wrong
    fields stay invalid."""
    with pytest.raises(pydantic.ValidationError) as caught:
        ReplyDraft.model_validate_json(json_text(answer))
    assert error_type in {item["type"] for item in caught.value.errors()}


def test_an_interactive_choice_survives_the_round_trip_through_a_fence() -> None:
    """LLM#3's nested list, fenced, parses to the same value."""
    value = choice("list", "Escolha:", list_button_text="Ver", sections=SATURDAY_SECTIONS)
    fenced = f"```json\n{json.dumps(value, ensure_ascii=False)}\n```"
    parsed = MessageChoice.model_validate_json(json_text(fenced))
    assert parsed.model_dump() == MessageChoice.model_validate(value).model_dump()
