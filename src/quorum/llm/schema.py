"""Structured answers: schemas in, checked data out.

Providers enforce a schema natively where they can; this module parses what came back
and checks it against the schema, so a provider that ignores the schema (or a small model
that breaks it) yields ``InvalidReply`` instead of half an answer. The checker covers the
JSON-schema subset quorum's own schemas and pydantic's simple models use: ``type``,
``enum``, ``const``, ``properties``, ``required``, ``additionalProperties``, ``items``,
``minimum``/``maximum``, ``minItems``/``maxItems``, ``anyOf`` and local ``$ref``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from quorum.errors import InvalidReply

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a pydantic model, in the strict form providers accept:
    every property required and no extra properties."""
    return _strict(model.model_json_schema())


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    if out.get("type") == "object" and "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in out["properties"].items()}
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    if "$defs" in out:
        out["$defs"] = {k: _strict(v) for k, v in out["$defs"].items()}
    for key in ("anyOf", "allOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    return out


def parse_json(text: str, *, where: str) -> Any:
    """Parse a JSON answer, tolerating a Markdown fence around it."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidReply(
            f"{where} answered text that is not JSON ({exc.msg} at char {exc.pos}): {_clip(text)}"
        ) from exc


def check(data: Any, schema: Mapping[str, Any], *, where: str) -> Any:
    """Return ``data`` if it fits ``schema``; else raise ``InvalidReply`` naming the path."""
    problem = _problem(data, schema, schema, "$")
    if problem:
        raise InvalidReply(f"{where} answered outside the requested schema: {problem}")
    return data


def _problem(data: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> str:
    if "$ref" in schema:
        return _problem(data, _resolve(schema["$ref"], root), root, path)
    if "anyOf" in schema:
        if all(_problem(data, s, root, path) for s in schema["anyOf"]):
            return f"{path} matches none of the allowed shapes"
        return ""
    if "enum" in schema and data not in schema["enum"]:
        return f"{path} is {data!r}, not one of {list(schema['enum'])}"
    if "const" in schema and data != schema["const"]:
        return f"{path} is {data!r}, expected {schema['const']!r}"
    kind = schema.get("type")
    if kind is not None and not _is_type(data, kind):
        return f"{path} should be {kind}, got {type(data).__name__}"
    return _nested_problem(data, schema, root, path)


def _nested_problem(data: Any, schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> str:
    if isinstance(data, dict):
        return _object_problem(data, schema, root, path)
    if isinstance(data, list):
        return _array_problem(data, schema, root, path)
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            return f"{path} is {data}, below the minimum {schema['minimum']}"
        if "maximum" in schema and data > schema["maximum"]:
            return f"{path} is {data}, above the maximum {schema['maximum']}"
    return ""


def _object_problem(
    data: dict[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str
) -> str:
    props: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in data:
            return f"{path}.{name} is missing"
    if schema.get("additionalProperties") is False:
        extra = sorted(set(data) - set(props))
        if extra:
            return f"{path} has unexpected properties {extra}"
    for name, value in data.items():
        if name in props:
            problem = _problem(value, props[name], root, f"{path}.{name}")
            if problem:
                return problem
    return ""


def _array_problem(data: list[Any], schema: Mapping[str, Any], root: Mapping[str, Any], path: str) -> str:
    if "minItems" in schema and len(data) < schema["minItems"]:
        return f"{path} has {len(data)} items, fewer than {schema['minItems']}"
    if "maxItems" in schema and len(data) > schema["maxItems"]:
        return f"{path} has {len(data)} items, more than {schema['maxItems']}"
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, value in enumerate(data):
            problem = _problem(value, items, root, f"{path}[{i}]")
            if problem:
                return problem
    return ""


def _is_type(data: Any, kind: str | list[str]) -> bool:
    kinds = [kind] if isinstance(kind, str) else kind
    for k in kinds:
        if isinstance(data, bool) and k in ("integer", "number"):
            continue
        if isinstance(data, _TYPES.get(k, (object,))):
            return True
    return False


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return dict(node)


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")
