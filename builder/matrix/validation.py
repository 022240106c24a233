"""Validation: a parsed config or report checked against its pydantic model, every error as one
``<file>: <key path>: <what was expected>`` line (values cut to :data:`builder.matrix.inputs.SHOWN`
characters)."""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError

from builder.matrix.inputs import SHOWN, ConfigError, shown


def validate(fname: str, raw: object, model: type[BaseModel], expected: str,
             error: type[ConfigError] = ConfigError):
    """``raw`` (a parsed config) validated as ``model``. Raises ``error`` with one line per problem:
    ``<fname>: expected <expected>, got <type>`` when it is not a mapping, else pydantic's errors."""
    if not isinstance(raw, dict):
        raise error([f"{fname}: expected {expected}, got {type(raw).__name__}"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(pydantic_lines(fname, exc, model)) from None


def pydantic_lines(fname: str, exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One ``<file>: <key path>: <what was expected>`` line per error of ``exc`` (raised by
    validating ``root``); values are cut to :data:`SHOWN` characters."""
    return [_format_error(fname, err, root) for err in exc.errors()]


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = str(part)
            out += ("." if out else "") + (key if len(key) <= SHOWN else shown(key))
    return out or "(top level)"


def _format_error(fname: str, err: dict, root: type[BaseModel]) -> str:
    # Drop pydantic's internal steps (function-after[...], literal choices) from the key path.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    where = _loc(loc)
    kind = err["type"]
    if kind == "missing":
        msg = "required field is missing"
    elif kind == "extra_forbidden":
        msg = f"unknown key {shown(loc[-1])}"
        allowed = _allowed_keys(root, loc[:-1])
        if allowed:
            msg += f" (expected one of: {', '.join(allowed)})"
        where = _loc(loc[:-1])
    elif kind == "value_error":
        msg = str(err["ctx"]["error"])
    elif kind in ("too_short",) and err.get("input") in ({}, []):
        msg = "must not be empty"
    elif kind == "literal_error":
        msg = f"{shown(err['input'])} is not allowed (expected {err['ctx']['expected']})"
    else:
        msg = f"{err['msg']} (got {shown(err.get('input'))})"
    return f"{fname}: {where}: {msg}"


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        fld = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        if fld is None:
            # a key of a dict of models (frameworks.<key>, bases.<key>)
            continue
        model = _inner_model(fld.annotation)
    return sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []


def _inner_model(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found:
            return found
    return None
