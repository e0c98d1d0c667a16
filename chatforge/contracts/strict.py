"""Strict request models that read JSON the way JSON Schema does.

Requests are strict: `"2"` is not 2, `"yes"` is not true, 1 is not true. Pydantic's strict mode
also refuses `2.0` for an integer, but JSON Schema calls 2.0 an integer (a number with no fraction),
and a published schema that says `integer` must not be stricter than the server; so an integral
float becomes the integer it is, and anything else stays refused. Every public request model — the
gateway's, the sandbox's, the jobs' flags — derives from `StrictModel`.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _json_integers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, float) and value.is_integer() and info.field_name is not None:
            if _takes_int(cls.model_fields[info.field_name].annotation):
                return int(value)
        return value


def _takes_int(annotation: Any) -> bool:
    """Whether a field's type is an integer (or an optional one), and not also a float."""
    if annotation is int:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_int(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        members = typing.get_args(annotation)
        return any(_takes_int(m) for m in members) and float not in members
    return False
