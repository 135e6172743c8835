"""Schemas from YAML, dicts or dataclasses: structural checks, then checks against a source.

:func:`load_schema` turns any form of a schema into a normalized :class:`Schema`, checking
only what needs no input file: known keys (with did-you-mean), types, output kinds,
expression syntax, define cycles and name collisions.  :func:`validate` then checks the
schema against the fields of an actual input, before any conversion work, and returns a
:class:`ResolvedSchema` holding everything the conversion needs.  Reading files and YAML
text lives in :mod:`rntensor.schema._yaml`, the checks against fields in
:mod:`rntensor.schema.resolve`.

Both are pure: the same inputs give the same result, and a schema's
:meth:`~Schema.fingerprint` does not depend on key order, comments or on whether it came from
YAML or a dict.
"""

from __future__ import annotations

import keyword
import os
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from rntensor.errors import SchemaError, did_you_mean
from rntensor.schema._yaml import MAX_SCHEMA_BYTES as MAX_SCHEMA_BYTES  # importable from here
from rntensor.schema._yaml import _as_path, _clip, _parse_yaml, _read
from rntensor.schema.expr import parse
from rntensor.schema.resolve import resolve
from rntensor.schema.spec import (
    LabelSpec,
    OutputSpec,
    ResolvedSchema,
    Schema,
    default_label_dtype,
)
from rntensor.sources import FieldInfo

__all__ = ["load_schema", "validate"]

_TOP_KEYS = ("name", "tree", "selection", "define", "outputs", "labels", "weights", "keep")
_OUTPUT_KEYS = ("fields", "length", "ragged", "pad_value", "sort_by", "normalize", "dtype")
_LABEL_KEYS = ("field", "classes", "dtype")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_DTYPES = (
    "float16",
    "float32",
    "float64",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
)


def load_schema(obj: str | os.PathLike[str] | Mapping[str, Any] | Schema) -> Schema:
    """A checked, normalized :class:`Schema` from a YAML file path, YAML text, a dict or a
    :class:`Schema` (which goes through the same checks).

    Raises:
        SchemaError: naming the key, value or expression that is wrong and what to write.
    """
    if isinstance(obj, Schema):
        return _build(obj.to_dict())
    if isinstance(obj, Mapping):
        return _build(obj)
    if isinstance(obj, (str, os.PathLike)):
        path = _as_path(obj)
        text = _read(path) if path is not None else str(obj)
        data = _parse_yaml(text, path)
        if not isinstance(data, Mapping):
            hint = (
                f"; no file named {str(obj)!r} exists"
                if path is None and "\n" not in str(obj) and ":" not in str(obj)
                else ""
            )
            raise SchemaError(
                f"a schema must be a mapping with keys {', '.join(_TOP_KEYS)}, got "
                f"{type(data).__name__} {_clip(data)}{hint}"
            )
        try:
            return _build(data)
        except SchemaError as err:
            if path is None:
                raise
            raise err.with_context(f"in schema file {path}") from err
    raise SchemaError(
        f"a schema is a YAML file path, YAML text, a dict or a Schema, got {type(obj).__name__}"
    )


def validate(
    schema: str | os.PathLike[str] | Mapping[str, Any] | Schema, fields: Mapping[str, FieldInfo]
) -> ResolvedSchema:
    """Check ``schema`` against the ``fields`` of an input, before any conversion work.

    Every name must be a field or a define (did-you-mean otherwise) of a supported type; a
    define may not shadow a field; flat outputs, labels, weights, ``keep`` and the selection
    need one value per event; a padded or ragged output holds objects of one collection,
    sorted by an expression over that collection.  Pure: depends on (schema, fields) only.

    Raises:
        SchemaError: naming the output, field or expression and what to change.
    """
    return resolve(load_schema(schema), fields)


# -- structural checks --------------------------------------------------------------------


def _keys(data: Mapping[Any, Any], allowed: tuple[str, ...], where: str) -> None:
    for k in data:
        if k not in allowed:
            raise SchemaError(
                f"unknown key {k!r} in {where};"
                f"{did_you_mean(str(k), allowed) or ''} expected one of {', '.join(allowed)}"
            )


def _str(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise SchemaError(f"{what} must be a non-empty string, got {_clip(value)}")


def _names(value: Any, what: str) -> tuple[str, ...]:
    """A list of names (a single string is a list of one)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SchemaError(f"{what} must be a list of names, got {_clip(value)}")
    out = tuple(_str(v, f"each entry of {what}") or "" for v in value)
    dup = sorted(v for v, k in Counter(out).items() if k > 1)
    if dup:
        raise SchemaError(f"{what} lists {dup[0]!r} more than once; list each name once")
    return out


def _int(value: Any, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SchemaError(f"{what} must be an integer >= {minimum}, got {_clip(value)}")
    return value


def _dtype(value: Any, what: str) -> str:
    try:
        dt = np.dtype(value) if isinstance(value, str) else None
    except Exception:  # numpy raises TypeError, ValueError, SyntaxError on odd text
        dt = None
    if dt is None or dt.kind not in "biuf":
        raise SchemaError(
            f"{what} must be a numpy dtype name, got {_clip(value)};"
            f"{did_you_mean(str(value), _DTYPES) or ''} expected one of {', '.join(_DTYPES)}"
        )
    return dt.name


def _normalize(value: Any, where: str) -> str:
    if value is None or value is False:
        return "none"
    if value is True:
        return "standard"
    if isinstance(value, str) and value.strip().lower() in ("standard", "none"):
        return value.strip().lower()
    raise SchemaError(
        f"'normalize' of {where} must be 'standard' or 'none' (or true/false), got "
        f"{_clip(value)};{did_you_mean(str(value), ('standard', 'none'))}"
    )


def _expr(text: Any, what: str) -> str:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise SchemaError(f"{what} must be an expression (text), got {_clip(text)}")
    try:
        parse(text)
    except SchemaError as err:
        raise SchemaError(f"{what}: {err.message}") from err
    return text.strip()


def _output(name: Any, body: Any) -> OutputSpec:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SchemaError(
            f"output name {_clip(name)} must start with a letter and hold only letters, "
            "digits, '_', '.' and '-'"
        )
    where = f"output {name!r}"
    if isinstance(body, (list, tuple)):
        body = {"fields": body}
    if not isinstance(body, Mapping):
        raise SchemaError(f"{where} must be a mapping with 'fields', got {_clip(body)}")
    _keys(body, _OUTPUT_KEYS, where)
    if "fields" not in body:
        raise SchemaError(f"{where} has no 'fields'; list the fields or defines it holds")
    fields = _names(body["fields"], f"'fields' of {where}")
    if not fields:
        raise SchemaError(f"'fields' of {where} is empty; list at least one field")
    length = body.get("length")
    ragged = body.get("ragged", False)
    if not isinstance(ragged, bool):
        raise SchemaError(f"'ragged' of {where} must be true or false, got {_clip(ragged)}")
    if length is not None:
        length = _int(length, f"'length' of {where}", minimum=1)
        if ragged:
            raise SchemaError(
                f"{where} sets both 'length' ({length}) and 'ragged: true'; a padded output "
                "has a length, a ragged one has none: drop one of them"
            )
    pad = body.get("pad_value", 0.0)
    if isinstance(pad, bool) or not isinstance(pad, (int, float)):
        raise SchemaError(f"'pad_value' of {where} must be a number, got {_clip(pad)}")
    sort_by = body.get("sort_by")
    if sort_by is not None:
        if length is None and not ragged:
            raise SchemaError(
                f"{where} is flat (one row per event) but sets 'sort_by'; sorting orders the "
                "objects of a padded or ragged output: add 'length' or 'ragged: true'"
            )
        sort_by = _expr(sort_by, f"'sort_by' of {where}")
    return OutputSpec(
        name=name,
        fields=fields,
        length=length,
        ragged=ragged,
        pad_value=float(pad),
        sort_by=sort_by,
        normalize=_normalize(body.get("normalize"), where),  # type: ignore[arg-type]
        dtype=_dtype(body.get("dtype", "float32"), f"'dtype' of {where}"),
    )


def _label(name: Any, body: Any) -> LabelSpec:
    if not isinstance(name, str) or not _NAME.match(name):
        raise SchemaError(f"label name {_clip(name)} must start with a letter")
    where = f"label {name!r}"
    if isinstance(body, str):
        body = {"field": body}
    if not isinstance(body, Mapping):
        raise SchemaError(f"{where} must be a mapping with 'field', got {_clip(body)}")
    _keys(body, _LABEL_KEYS, where)
    field = _str(body.get("field"), f"'field' of {where}")
    classes = body.get("classes")
    if classes is not None:
        classes = _int(classes, f"'classes' of {where}", minimum=2)
    dtype = body.get("dtype")
    dtype = default_label_dtype(classes) if dtype is None else _dtype(dtype, f"'dtype' of {where}")
    if classes is not None and np.dtype(dtype).kind not in "iu":
        raise SchemaError(
            f"{where} has {classes} classes but dtype {dtype}; a class index needs an integer "
            "dtype (int64), or drop 'classes' for a regression target"
        )
    return LabelSpec(name=name, field=field or "", classes=classes, dtype=dtype)


def _build(data: Mapping[Any, Any]) -> Schema:
    _keys(data, _TOP_KEYS, "the schema")
    name = _str(data.get("name"), "'name' of the schema")
    tree = _str(data.get("tree"), "'tree'", optional=True)
    selection = data.get("selection")
    if selection is not None:
        selection = _expr(selection, "'selection'")
    define_in = data.get("define") or {}
    if not isinstance(define_in, Mapping):
        raise SchemaError(f"'define' must map names to expressions, got {_clip(define_in)}")
    define: dict[str, str] = {}
    for k, v in define_in.items():
        if not isinstance(k, str) or not k.isidentifier() or keyword.iskeyword(k):
            raise SchemaError(
                f"define name {_clip(k)} must be an identifier (letters, digits, '_') so that "
                "expressions can refer to it"
            )
        define[k] = _expr(v, f"define {k!r}")
    outputs_in = data.get("outputs")
    if not isinstance(outputs_in, Mapping) or not outputs_in:
        raise SchemaError(
            "the schema needs 'outputs': a mapping of output names to their fields, e.g. "
            "outputs: {scalars: {fields: [MET_pt]}}"
            + ("" if outputs_in is None else f"; got {_clip(outputs_in)}")
        )
    outputs = tuple(_output(k, v) for k, v in outputs_in.items())
    labels_in = data.get("labels") or {}
    if not isinstance(labels_in, Mapping):
        raise SchemaError(
            f"'labels' must map label names to fields, e.g. target: {{field: label, classes: 2}}"
            f"; got {_clip(labels_in)}"
        )
    labels = tuple(_label(k, v) for k, v in labels_in.items())
    weights = _str(data.get("weights"), "'weights'", optional=True)
    keep = _names(data.get("keep"), "'keep'")
    _check_cycles(define)
    _check_collisions(outputs, labels, keep, weights)
    return Schema(
        name=name or "",
        outputs=outputs,
        tree=tree,
        selection=selection,
        define=define,
        labels=labels,
        weights=weights,
        keep=keep,
    )


def _check_cycles(define: Mapping[str, str]) -> None:
    deps = {k: sorted(parse(v).names & set(define)) for k, v in define.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(deps):
        if state.get(root):
            continue
        path = [root]
        its = [iter(deps[root])]
        state[root] = 1
        while its:
            nxt = next(its[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                its.pop()
            elif state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise SchemaError(
                    f"defines refer to each other in a cycle: {' -> '.join(cycle)}; "
                    "a define may only use fields and other defines that do not use it"
                )
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                its.append(iter(deps[nxt]))


def _check_collisions(
    outputs: tuple[OutputSpec, ...],
    labels: tuple[LabelSpec, ...],
    keep: tuple[str, ...],
    weights: str | None,
) -> None:
    """Every key of a batch must be unique."""
    keys: dict[str, str] = {"_entry": "the entry number column '_entry'"}
    if weights is not None:
        keys["weight"] = "the weights column 'weight'"

    def add(key: str, what: str) -> None:
        if key in keys:
            raise SchemaError(
                f"{what} and {keys[key]} would both be called {key!r} in a batch; rename one"
            )
        keys[key] = what

    for o in outputs:
        add(o.name, f"output {o.name!r}")
        if o.kind == "padded":
            add(f"{o.name}_mask", f"the mask {o.name + '_mask'!r} of output {o.name!r}")
        elif o.kind == "ragged":
            add(f"{o.name}_offsets", f"the offsets {o.name + '_offsets'!r} of output {o.name!r}")
    for lb in labels:
        add(lb.name, f"label {lb.name!r}")
    for k in keep:
        add(k, f"kept field {k!r}")
