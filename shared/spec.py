"""Validated dataclasses: the one way a config or message field is declared, checked and reported.

A field declared with :func:`spec` carries its limits and a one-line doc. :func:`from_dict` builds the dataclass from
untrusted JSON, checking types, ranges, finiteness, lengths and unknown keys; every failure raises
:class:`SpecError`, which names the field, what was expected, what arrived and how to fix it. The same error travels
over the wire as the protocol's ``error`` message, so the add-on, the CLI and the server report it identically.

Supported field types: bool, int, float, str, ``Optional[T]``, ``tuple[float, ...]`` / ``tuple[int, ...]``,
``dict[str, float]`` and nested spec dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Mapping, TypeVar

from .errors import JokerError

T = TypeVar("T")

MAX_STR = 4096  # default string limit; prompts declare their own
MAX_ITEMS = 4096  # default limit for tuples and dicts


class SpecError(JokerError, ValueError):
    """A value that does not fit its declared field. Carries what the protocol's ``error`` message needs."""

    def __init__(self, field: str, expected: str, received: Any, hint: str = "", code: str = "invalid_field"):
        shown = _short(received)
        super().__init__(f"{field}: expected {expected}, received {shown}" + (f" — {hint}" if hint else ""), hint,
                         code, field=field, expected=expected, received=shown)

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "field": self.field, "expected": self.expected, "received": self.received}


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")  # odd unicode stays printable
    return text if len(text) <= limit else text[: limit - 3] + "..."


def spec(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
         choices: tuple | None = None, max_len: int | None = None, pattern: str | None = None,
         doc: str = "", hint: str = "") -> Any:
    """Declare a dataclass field with limits. ``lo``/``hi`` are inclusive; ``max_len`` bounds strings and containers."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "max_len": max_len, "pattern": pattern, "doc": doc, "hint": hint}
    if isinstance(default, (list, dict, set)):
        frozen = default
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _hint(meta: Mapping[str, Any], fallback: str) -> str:
    return meta.get("hint") or fallback


def _check_number(name: str, value: Any, kind: type, meta: Mapping[str, Any]) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(name, kind.__name__, value, _hint(meta, f"send a JSON number for {name}"))
    if kind is int and (isinstance(value, float) and not value.is_integer()):
        raise SpecError(name, "an integer", value, _hint(meta, "drop the fractional part"))
    if not math.isfinite(value):
        raise SpecError(name, "a finite number", value, _hint(meta, "NaN and infinity are not allowed"))
    lo, hi = meta.get("lo"), meta.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"{kind.__name__} in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise SpecError(name, rng, value, _hint(meta, f"choose a value in that range for {name}"))
    return kind(value)


def _check_str(name: str, value: Any, meta: Mapping[str, Any]) -> str:
    if not isinstance(value, str):
        raise SpecError(name, "a string", value, _hint(meta, f"send {name} as a JSON string"))
    limit = meta.get("max_len") or MAX_STR
    if len(value) > limit:
        raise SpecError(name, f"at most {limit} characters", f"{len(value)} characters", _hint(meta, "shorten it"))
    if "\x00" in value:
        raise SpecError(name, "text without NUL characters", value, "remove control characters")
    pattern = meta.get("pattern")
    if pattern is not None:
        import re

        if not re.fullmatch(pattern, value):
            raise SpecError(name, f"text matching {pattern}", value, _hint(meta, "check the value's format"))
    return value


def _convert(name: str, tp: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[T]
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(name, inner, value, meta)
    if tp is Any:  # free-form JSON (job params, result meta): bounded by the header size, checked by its owner
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=name + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(name, "true or false", value, _hint(meta, f"send {name} as a JSON boolean"))
        return value
    if tp in (int, float):
        value = _check_number(name, value, tp, meta)
    elif tp is str:
        value = _check_str(name, value, meta)
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise SpecError(name, "a list", value, _hint(meta, f"send {name} as a JSON array"))
        limit = meta.get("max_len") or MAX_ITEMS
        if len(value) > limit or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            want = f"{len(args)} items" if args and args[-1] is not Ellipsis else f"at most {limit} items"
            raise SpecError(name, want, f"{len(value)} items", _hint(meta, "check the list length"))
        item_types = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args)
        item_meta = {**meta, "choices": None}
        value = tuple(_convert(f"{name}[{i}]", t, v, item_meta) for i, (t, v) in enumerate(zip(item_types, value)))
    elif origin is dict:
        if not isinstance(value, Mapping):
            raise SpecError(name, "an object", value, _hint(meta, f"send {name} as a JSON object"))
        limit = meta.get("max_len") or MAX_ITEMS
        if len(value) > limit:
            raise SpecError(name, f"at most {limit} entries", f"{len(value)} entries", "send fewer entries")
        key_meta = {"max_len": 128}
        value = {_check_str(f"{name} key", k, key_meta): _convert(f"{name}[{k!r}]", args[1], v, {**meta, "choices": None})
                 for k, v in value.items()}
    else:
        raise TypeError(f"spec: unsupported field type {tp!r} for {name}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SpecError(name, f"one of {', '.join(map(str, choices))}", value, _hint(meta, "pick one of those"))
    return value


@functools.cache
def _declared(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field]]:
    """A dataclass's resolved type hints and init fields, once per class (``get_type_hints`` costs ~0.3 ms a call:
    the server validates every message with it)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls) if f.init}


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Build ``cls`` from untrusted JSON data; missing fields take their defaults, unknown keys are refused."""
    if not isinstance(data, Mapping):
        raise SpecError(prefix.rstrip(".") or cls.__name__, "a JSON object", data, "send an object of named fields")
    hints, fields = _declared(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(prefix + str(unknown[0]), f"one of the fields {', '.join(sorted(fields))}", unknown[0],
                        "remove the unknown field or check its spelling", code="unknown_field")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(prefix + name, hints[name], data[name], f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(prefix + name, "a value (required)", "nothing", f"add the field {prefix + name}",
                            code="missing_field")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):  # cross-field rules live on the class
        validate()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-ready dict of a spec dataclass (tuples become lists)."""
    return _plain(obj)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _plain(v: Any) -> Any:
    # module-level, not a closure: a recursive closure is a reference cycle, left for the garbage collector on every
    # message the server encodes
    if v is None or type(v) in (str, int, float, bool):  # most values: answered before the dataclass check
        return v
    if dataclasses.is_dataclass(v):
        return {name: _plain(getattr(v, name)) for name in _field_names(type(v))}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def check(obj: T) -> T:
    """Re-validate a dataclass built in code (round-trips through :func:`from_dict`)."""
    return from_dict(type(obj), to_dict(obj))


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, doc) per field — for ``--help`` texts and the docs."""
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f.name, str(f.type), default, f.metadata.get("doc", "")))
    return rows
