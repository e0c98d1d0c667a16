"""Request limits a service's Settings set: declared on the request models, checked, published.

A field of a public request model names the setting that bounds it, by JSON Schema keyword:

    n: int = Field(1, ge=1, json_schema_extra=limit(maximum=("max_n", "n_too_large")))

The one declaration does two things. `violations(request, settings)` checks a parsed request
against the settings' values (a list length for `maxItems`, a string length for `maxLength`, a
number for `maximum`, an object's key count for `maxProperties`; a keyword applies to the values
of its type only, so `str | list[...]` can bound both), and `publish(openapi, settings)` writes
the same values into the service's OpenAPI document, so the schema a client reads is the one the
server enforces. The marker stays in the schema as `x-limit`, naming for each keyword the setting
and the error code a violation answers with.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

MARKER = "x-limit"
KEYWORDS = ("maxItems", "maxLength", "maximum", "maxProperties")
_SCHEMA_TYPES = {"maxItems": "array", "maxLength": "string", "maximum": ("integer", "number"),
                 "maxProperties": "object"}  # fmt: skip
_UNITS = {"maxItems": "items", "maxLength": "characters", "maximum": "", "maxProperties": "keys"}


def limit(**bounds: tuple[str, str]) -> dict[str, Any]:
    """The `json_schema_extra` of a field bounded by settings, keyword=(setting, error code):
    `limit(maxItems=("max_messages", "too_many_messages"))`."""
    unknown = set(bounds) - set(KEYWORDS)
    if unknown or not bounds:
        raise ValueError(f"limit() takes some of {', '.join(KEYWORDS)}, got {sorted(bounds)}")
    return {MARKER: {k: {"setting": setting, "code": code} for k, (setting, code) in bounds.items()}}


@dataclass(frozen=True)
class Violation:
    param: str  # where, as the services name fields: messages.3.content
    setting: str  # which setting bounds it: max_parts_per_message
    limit: int | float
    actual: int | float
    code: str
    unit: str  # "items", "characters", "keys", or "" for a number

    @property
    def message(self) -> str:
        if self.unit:
            return (
                f"{self.param} has {self.actual} {self.unit}, over the limit of {self.limit} ({self.setting})"
            )
        return f"{self.param} is {self.actual}, over the limit of {self.limit} ({self.setting})"


def violations(request: BaseModel, settings: Any) -> Iterator[Violation]:
    """Every value of `request` (nested models and lists of them included) over its setting's bound."""
    yield from _walk(request, settings, ())


def first_violation(request: BaseModel, settings: Any) -> Violation | None:
    return next(violations(request, settings), None)


def publish(document: Any, settings: Any) -> Any:
    """Write the settings' values into every `x-limit` marked schema of an OpenAPI document (in place)."""
    if isinstance(document, dict):
        marker = document.get(MARKER)
        if isinstance(marker, dict):
            for keyword, bound in marker.items():
                _apply(document, keyword, getattr(settings, bound["setting"]))
        for value in document.values():
            publish(value, settings)
    elif isinstance(document, list):
        for value in document:
            publish(value, settings)
    return document


# --- helpers -------------------------------------------------------------------------------------


def _walk(model: BaseModel, settings: Any, path: tuple[str, ...]) -> Iterator[Violation]:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        where = (*path, name)
        extra: dict[str, Any] = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        marker: Any = extra.get(MARKER)
        if isinstance(marker, dict) and value is not None:
            for keyword, bound in marker.items():
                most = getattr(settings, bound["setting"])
                measured = _measure(keyword, value)
                if measured is not None and measured > most:
                    yield Violation(
                        ".".join(where), bound["setting"], most, measured, bound["code"], _UNITS[keyword]
                    )
        yield from _nested(value, settings, where)


def _nested(value: Any, settings: Any, where: tuple[str, ...]) -> Iterator[Violation]:
    if isinstance(value, BaseModel):
        yield from _walk(value, settings, where)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for i, item in enumerate(value):
            if isinstance(item, BaseModel):
                yield from _walk(item, settings, (*where, str(i)))


def _measure(keyword: str, value: Any) -> int | float | None:
    """The size `keyword` bounds, or None when `value` is not of the keyword's type."""
    if keyword == "maxLength":
        return len(value) if isinstance(value, str) else None
    if keyword == "maxItems":
        return len(value) if isinstance(value, list | tuple) else None
    if keyword == "maxProperties":
        return len(value) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _apply(schema: dict[str, Any], keyword: str, value: Any) -> None:
    """Set `keyword` on the schema, or on each branch of its anyOf/oneOf whose type it bounds."""
    wanted = _SCHEMA_TYPES[keyword]
    branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    for branch in branches:
        kind = branch.get("type")
        if kind == wanted or (isinstance(wanted, tuple) and kind in wanted):
            current = branch.get(keyword)
            branch[keyword] = value if current is None else min(current, value)
