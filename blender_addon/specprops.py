"""Blender properties built from the shared spec fields they mirror, so a limit is declared once.

A panel control that sets a request field (``GenerateParams.cfg``, ``ExportConfig.faces``, ...) takes its bounds
(``min``/``max`` from the field's ``lo``/``hi``), its choices (enum items from ``choices``), its text limit
(``maxlen`` from ``max_len``), its default and its tooltip (``doc``) from the field's ``shared.spec.spec`` metadata.
Keyword arguments override what the add-on means differently (e.g. a preview's 25 steps instead of the job's 100);
:data:`MIRRORS` records which property mirrors which field, for the tests and for readers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

BLENDER_INT_MAX = 2**31 - 1  # IntProperty is a signed 32-bit int; wider spec limits are clamped to it

# (PropertyGroup name, property name) -> (spec dataclass, field name); filled as props.py declares its properties
MIRRORS: dict[tuple[str, str], tuple[type, str]] = {}


def spec_field(cls: type, name: str) -> dataclasses.Field:
    """The dataclass field ``name`` of ``cls`` (a clear error naming both when it does not exist)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise AttributeError(f"{cls.__name__}.{name}: no such spec field — expected one of "
                         f"{', '.join(f.name for f in dataclasses.fields(cls))}")


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def mirror(group: str, prop: str, cls: type, name: str) -> dataclasses.Field:
    """Record that ``group.prop`` mirrors the spec field ``cls.name``; return that field."""
    f = spec_field(cls, name)
    MIRRORS[(group, prop)] = (cls, name)
    return f


def _common(group: str, prop: str, cls: type, name: str, label: str) -> tuple[dataclasses.Field, dict[str, Any]]:
    f = mirror(group, prop, cls, name)
    return f, {"name": label, "description": f.metadata.get("doc", "")}


def _bounds(f: dataclasses.Field, clamp: bool = False) -> dict[str, Any]:
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    out = {}
    if lo is not None:
        out["min"] = max(int(lo), -BLENDER_INT_MAX - 1) if clamp else float(lo)
    if hi is not None:
        out["max"] = min(int(hi), BLENDER_INT_MAX) if clamp else float(hi)
    return out


def float_property(group: str, prop: str, cls: type, name: str, label: str, **override: Any) -> Any:
    """A FloatProperty with ``cls.name``'s default, bounds and doc (a tuple field's item bounds: ``pose``)."""
    f, kw = _common(group, prop, cls, name, label)
    default = _default(f)
    kw.update(_bounds(f), default=float(default) if isinstance(default, (int, float)) else 0.0)
    return FloatProperty(**{**kw, **override})


def int_property(group: str, prop: str, cls: type, name: str, label: str, **override: Any) -> Any:
    """An IntProperty with ``cls.name``'s default, bounds (clamped to Blender's int range) and doc."""
    f, kw = _common(group, prop, cls, name, label)
    default = _default(f)
    kw.update(_bounds(f, clamp=True), default=int(default) if isinstance(default, int) else 0)
    return IntProperty(**{**kw, **override})


def string_property(group: str, prop: str, cls: type, name: str, label: str, **override: Any) -> Any:
    """A StringProperty with ``cls.name``'s default, length limit (``maxlen``) and doc."""
    f, kw = _common(group, prop, cls, name, label)
    if f.metadata.get("max_len"):
        kw["maxlen"] = int(f.metadata["max_len"])
    kw["default"] = str(_default(f) or "")
    return StringProperty(**{**kw, **override})


def enum_property(group: str, prop: str, cls: type, name: str, label: str,
                  labels: Mapping[Any, tuple[str, str]] = {}, values: Iterable[Any] = (), fmt: str = "{}",
                  **override: Any) -> Any:
    """An EnumProperty whose items are ``cls.name``'s ``choices`` (or, for a range field, the ``values`` inside
    its [lo, hi]), identifiers ``str(value)``; ``labels`` gives an item's (label, description), else ``fmt``."""
    f, kw = _common(group, prop, cls, name, label)
    kw["items"] = [(str(v), *labels.get(v, (fmt.format(v), ""))) for v in enum_values(f, values)]
    kw["default"] = str(_default(f))
    return EnumProperty(**{**kw, **override})


def enum_values(f: dataclasses.Field, values: Iterable[Any] = ()) -> list[Any]:
    """The values an enum over field ``f`` offers: its ``choices``, else ``values`` within its [lo, hi]."""
    choices = f.metadata.get("choices")
    if choices:
        return list(choices)
    lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
    return [v for v in values if (lo is None or v >= lo) and (hi is None or v <= hi)]
