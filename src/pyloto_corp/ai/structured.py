"""Structured outputs on any OpenAI-compatible server: the three ways to ask for a step's JSON,
the schema each sends (built from the step's pydantic model), and reading the answer back.

- `json_schema`: strict structured outputs (OpenAI, vLLM, Sabiá, some Groq models).
- `json_object`: JSON mode with the schema beside it, in llama.cpp's form
  `{"type": "json_object", "schema": {...}}` (llama-cpp-python enforces it with a grammar:
  https://github.com/abetlen/llama-cpp-python/pull/1122), and in the system prompt for the
  servers that ignore the field.
- `prompt`: no `response_format` at all, the schema in the system prompt only.

Whatever the mode, the answer is validated here with the same pydantic model, and read
tolerantly: a server that does not enforce the format (Ollama Cloud takes `json_schema` without
enforcing it) may wrap the object in prose or a ```json fence.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

Mode = Literal["json_schema", "json_object", "prompt"]
# From the most to the least the server promises; `auto` steps down this list.
MODES: tuple[Mode, ...] = ("json_schema", "json_object", "prompt")


def weaker(mode: Mode) -> Mode | None:
    """The next mode down, or None below `prompt`."""
    index = MODES.index(mode)
    return MODES[index + 1] if index + 1 < len(MODES) else None


@functools.cache
def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` in the subset strict structured outputs accept
    (https://platform.openai.com/docs/guides/structured-outputs#supported-schemas): every
    object closed (`additionalProperties: false`) with all its properties required, `$defs`
    inlined (Gemini's compatibility layer and llama.cpp's grammars read no references).
    Built once per model: generating a schema is the costly part of a call."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    result = _strict(schema, definitions, ())
    assert isinstance(result, dict)
    return result


def _strict(node: Any, definitions: Mapping[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_strict(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str):
        name = reference.removeprefix("#/$defs/")
        if name in seen:  # a recursive model has no inlined form
            raise ValueError(f"recursive schema through {name}")
        target = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _strict(target, definitions, (*seen, name))
    result = {key: _strict(value, definitions, seen) for key, value in node.items()}
    if result.get("type") == "object" and "properties" in result:
        result["additionalProperties"] = False
        result["required"] = list(result["properties"])
    if result.get("default", ...) is None:
        del result["default"]  # strict mode refuses defaults; a null default says nothing
    return result


@functools.cache
def _schema_text(model: type[BaseModel]) -> str:
    return json.dumps(strict_schema(model), ensure_ascii=False, separators=(",", ":"))


def instruction(model: type[BaseModel]) -> str:
    """What the system prompt says of the answer's shape when the server may not enforce it
    (the word JSON in it also satisfies OpenAI's JSON mode, which demands it)."""
    return (
        "Responda somente com um objeto JSON válido, sem texto antes ou depois, que siga "
        f"este JSON Schema:\n{_schema_text(model)}"
    )


def request_fields(
    messages: Sequence[Mapping[str, Any]], model: type[BaseModel], mode: Mode
) -> dict[str, Any]:
    """The `messages` and `response_format` of a chat completion asking for `model` in
    `mode` (no `response_format` in `prompt` mode)."""
    schema = strict_schema(model)
    if mode == "json_schema":
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": model.__name__, "schema": schema, "strict": True},
        }
        return {"messages": list(messages), "response_format": response_format}
    fields: dict[str, Any] = {"messages": _with_instruction(messages, model)}
    if mode == "json_object":
        fields["response_format"] = {"type": "json_object", "schema": schema}
    return fields


def _with_instruction(
    messages: Sequence[Mapping[str, Any]], model: type[BaseModel]
) -> list[Mapping[str, Any]]:
    """`messages` with the schema instruction closing the system prompt (or opening the
    conversation as one, when there is none)."""
    text = instruction(model)
    if (
        messages
        and messages[0].get("role") == "system"
        and isinstance(messages[0].get("content"), str)
    ):
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{text}"}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def json_text(content: str) -> str:
    """The JSON object in a model's answer: the answer itself when it is one, else the inside
    of its first code fence, else the span from its first `{` to its last `}`; else the
    answer as it is (for the validation to call unparsable)."""
    stripped = content.strip()
    if stripped.startswith("{"):
        return stripped
    fence = _FENCE.search(stripped)
    if fence is not None and fence.group(1).strip().startswith("{"):
        return fence.group(1).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        return stripped[start : end + 1]
    return stripped
