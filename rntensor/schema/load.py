"""Schemas from YAML, dicts or dataclasses: structural checks, then checks against a source.

:func:`load_schema` turns any form of a schema into a normalized :class:`Schema`, checking
only what needs no input file: known keys (with did-you-mean), types, output kinds,
expression syntax, define cycles and name collisions.  :func:`validate` then checks the
schema against the fields of an actual input, before any conversion work, and returns a
:class:`ResolvedSchema` holding everything the conversion needs.

Both are pure: the same inputs give the same result, and a schema's
:meth:`~Schema.fingerprint` does not depend on key order, comments or on whether it came from
YAML or a dict.
"""

from __future__ import annotations

import keyword
import os
import re
import reprlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import yaml

from rntensor.errors import SchemaError, did_you_mean
from rntensor.schema.expr import Expr, evaluate, infer_collection, parse
from rntensor.schema.spec import (
    LabelSpec,
    OutputSpec,
    ResolvedLabel,
    ResolvedOutput,
    ResolvedSchema,
    Schema,
    default_label_dtype,
)
from rntensor.sources import Column, FieldInfo, Jagged

__all__ = ["load_schema", "validate"]

MAX_SCHEMA_BYTES = 1 << 20

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
    return _Resolver(load_schema(schema), fields).run()


# -- reading ------------------------------------------------------------------------------


def _as_path(obj: str | os.PathLike[str]) -> str | None:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if "\n" in obj or len(obj) > 4096:
        return None
    if obj.endswith((".yaml", ".yml")) or os.path.isfile(obj):
        return obj
    return None


def _read(path: str) -> str:
    try:
        size = os.path.getsize(path)
        if size > MAX_SCHEMA_BYTES:
            raise SchemaError(
                f"schema file {path} is {size} bytes, more than the limit of "
                f"{MAX_SCHEMA_BYTES}; is it the right file?"
            )
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError as err:
        raise SchemaError(f"schema file not found: {path}; check the path") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SchemaError(f"cannot read schema file {path}: {err}") from err


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise SchemaError(
                f"YAML key {_clip(key)} is not a name (line {key_node.start_mark.line + 1})"
            )
        if key in out:
            raise SchemaError(
                f"key {key!r} appears twice in one mapping (line "
                f"{key_node.start_mark.line + 1}); keep one"
            )
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _parse_yaml(text: str, path: str | None) -> Any:
    if len(text) > MAX_SCHEMA_BYTES:
        raise SchemaError(f"schema text of {len(text)} characters is longer than the limit")
    where = f"schema file {path}" if path else "schema text"
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SchemaError(f"invalid YAML in {where}{line}: {problem}") from err
    except RecursionError as err:
        raise SchemaError(f"invalid YAML in {where}: nested too deeply") from err


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 50, 50


def _clip(x: Any) -> str:
    """A short repr, bounded even for a YAML alias bomb."""
    r = _REPR.repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


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


# -- checks against a source --------------------------------------------------------------

# dummy columns of two events (the first with two objects, the second with none): every
# expression is evaluated on them once to learn its dtype, exactly as conversion will
_DUMMY_OFFSETS = np.array([0, 2, 2], dtype=np.int64)


class _Resolver:
    def __init__(self, schema: Schema, fields: Mapping[str, FieldInfo]) -> None:
        self.schema = schema
        self.fields = fields
        self.defines = {k: parse(v) for k, v in schema.define.items()}
        self.colls: dict[str, str | None] = {}
        self.dtypes: dict[str, str] = {}
        self.dummy: dict[str, Column] = {}
        self.raw: set[str] = set()
        self.order: list[str] = []

    def run(self) -> ResolvedSchema:
        s = self.schema
        for k in self.defines:
            if k in self.fields:
                raise SchemaError(
                    f"define {k!r} shadows the source field {k!r} of the same name; rename the "
                    f"define (e.g. {k}_def) so that both stay reachable"
                )
        selection: Expr | None = None
        selection_defines: tuple[str, ...] = ()
        if s.selection is not None:
            selection = parse(s.selection)
            self.check_selection(selection)
            selection_defines = tuple(self.order)
        outputs = tuple(self.output(o) for o in s.outputs)
        labels = tuple(
            ResolvedLabel(
                lb.name,
                lb.field,
                lb.classes,
                lb.dtype,
                self.per_event(lb.field, f"label {lb.name!r}"),
            )
            for lb in s.labels
        )
        if s.weights is not None:
            self.per_event(s.weights, "'weights'")
        for k in s.keep:
            self.per_event(k, "'keep'")
        for k in self.defines:  # report mistakes in defines nothing uses, too
            if k not in self.colls:
                _Resolver(s, self.fields).define(k)
        return ResolvedSchema(
            schema=s,
            input_fields=tuple(sorted(self.raw)),
            defines_order=tuple(self.order),
            defines={k: self.defines[k] for k in self.order},
            selection=selection,
            selection_defines=selection_defines,
            outputs=outputs,
            labels=labels,
            weights=s.weights,
            keep=s.keep,
            dtypes=dict(self.dtypes),
            collections=dict(self.colls),
        )

    # -- names ----------------------------------------------------------------------------
    def name(self, name: str, where: str) -> None:
        if name in self.colls:
            return
        if name in self.defines:
            self.define(name)
            return
        fi = self.fields.get(name)
        if fi is None:
            hint = did_you_mean(name, [*self.fields, *self.defines])
            if not re.match(r"^[A-Za-z_][\w.]*$", name):
                hint = " only names go here: write the expression in 'define' and use the "
                hint += "define's name;" + did_you_mean(name, [*self.fields, *self.defines])
            raise SchemaError(
                f"unknown field {name!r} in {where};"
                f"{hint or ' it is neither a field of the input nor a define'}"
            )
        try:
            dt = np.dtype(fi.dtype) if fi.supported else None
        except Exception:
            dt = None
        if dt is None or dt.kind not in "biuf":
            raise SchemaError(
                f"field {name!r} in {where} has type {fi.typename or fi.dtype!r}, which rntensor "
                f"cannot turn into tensors (strings, nested lists, objects); remove it from {where}"
            )
        self.raw.add(name)
        self.dtypes[name] = dt.name
        self.colls[name] = (fi.collection or name) if fi.jagged else None
        self.dummy[name] = Jagged(_DUMMY_OFFSETS, np.ones(2, dt)) if fi.jagged else np.ones(2, dt)

    def define(self, root: str) -> None:
        """Resolve ``root`` after every define it uses (load_schema refused cycles)."""
        order: list[str] = []
        stack = [(root, iter(sorted(self.defines[root].names & self.defines.keys())))]
        seen = {root}
        while stack:
            d, deps = stack[-1]
            nxt = next(deps, None)
            if nxt is None:
                order.append(d)
                stack.pop()
            elif nxt not in seen and nxt not in self.colls:
                seen.add(nxt)
                stack.append((nxt, iter(sorted(self.defines[nxt].names & self.defines.keys()))))
        for d in order:
            expr, where = self.defines[d], f"define {d!r}"
            for n in sorted(expr.names - self.defines.keys()):
                self.name(n, where)
            coll = self.collection(expr, where)
            value = self.value(expr, where)
            self.colls[d] = coll
            self.dtypes[d] = value.dtype.name
            self.dummy[d] = value
            self.order.append(d)

    def collection(self, expr: Expr, where: str) -> str | None:
        for n in sorted(expr.names):
            self.name(n, where)
        try:
            return infer_collection(expr, self.colls)
        except SchemaError as err:
            raise SchemaError(f"{where}: {err.message}") from err

    def value(self, expr: Expr, where: str) -> Column:
        try:
            return evaluate(expr, self.dummy, len(_DUMMY_OFFSETS) - 1)
        except SchemaError as err:
            raise SchemaError(f"{where}: {err.message}") from err

    def per_event(self, name: str, where: str) -> str:
        self.name(name, where)
        coll = self.colls[name]
        if coll is not None:
            raise SchemaError(
                f"{where}: {name!r} is jagged (one value per {_noun(coll)}) but {where} needs "
                f"one value per event; reduce it in a define ({_reduce_hint(name)})"
            )
        return self.dtypes[name]

    # -- parts of the schema --------------------------------------------------------------
    def check_selection(self, sel: Expr) -> None:
        coll = self.collection(sel, "the selection")
        if coll is not None:
            raise SchemaError(
                f"the selection {sel.text!r} gives one value per {_noun(coll)}, not one per "
                f"event; reduce it, e.g. any({sel.text}) or all({sel.text})"
            )
        dtype = self.value(sel, "the selection").dtype
        if dtype.kind != "b":
            raise SchemaError(
                f"the selection {sel.text!r} gives {dtype} values, not a condition (true or "
                f"false per event); compare it, e.g. '{sel.text} > 0'"
            )

    def output(self, o: OutputSpec) -> ResolvedOutput:
        where = f"output {o.name!r}"
        for f in o.fields:
            self.name(f, where)
        coll: str | None = None
        if o.kind == "flat":
            for f in o.fields:
                c = self.colls[f]
                if c is not None:
                    raise SchemaError(
                        f"{where}: field {f!r} is jagged (one value per {_noun(c)}) but a flat "
                        "output needs one value per event; reduce it "
                        f"({_reduce_hint(f)}) or move it to a padded/ragged output"
                    )
        else:
            jagged = [(f, self.colls[f]) for f in o.fields if self.colls[f] is not None]
            if not jagged:
                examples = sorted(p for p, fi in self.fields.items() if fi.jagged)[:3]
                such = f" such as {', '.join(examples)}" if examples else ""
                drop = "'length'" if o.kind == "padded" else "'ragged'"
                raise SchemaError(
                    f"{where} is {o.kind} but all its fields ({', '.join(o.fields)}) are one "
                    f"value per event; a {o.kind} output holds the objects of one collection "
                    f"(fields{such}); drop {drop} to make it a flat output"
                )
            first: dict[str, str] = {}
            for f, c in jagged:
                first.setdefault(str(c), f)
            if len(first) > 1:
                (c1, f1), (c2, f2) = list(first.items())[:2]
                raise SchemaError(
                    f"{where} mixes collections {c1} ({f1}) and {c2} ({f2}), which have "
                    f"different numbers of objects per event; move {f2} to an output of its "
                    f"own or reduce it ({_reduce_hint(f2)})"
                )
            coll = jagged[0][1]
        sort: Expr | None = None
        if o.sort_by is not None:
            sort = parse(o.sort_by)
            w = f"'sort_by' of {where}"
            c = self.collection(sort, w)
            assert coll is not None  # load_schema refuses sort_by on flat outputs
            if c != coll:
                got = "one value per event" if c is None else f"one value per {_noun(c)} ({c})"
                raise SchemaError(
                    f"{w} is {o.sort_by!r}, which gives {got}, but the output holds "
                    f"{coll} objects; sort by an expression of that collection, e.g. "
                    f"-{jagged[0][0]}"
                )
            kind = self.value(sort, w).dtype.kind
            if kind not in "biuf":  # pragma: no cover - every value is numeric
                raise SchemaError(f"{w} must give numbers")
        return ResolvedOutput(
            name=o.name,
            kind=o.kind,
            fields=o.fields,
            field_dtypes=tuple(self.dtypes[f] for f in o.fields),
            collection=coll,
            dtype=o.dtype,
            length=o.length,
            pad_value=o.pad_value,
            normalize=o.normalize,
            sort_by=sort,
        )


def _noun(coll: str) -> str:
    base = coll.split("[", 1)[0] or "object"
    if base.endswith("s") and not base.endswith("ss") and len(base) > 3:
        base = base[:-1]  # Tracks → track
    return base.lower()


def _reduce_hint(name: str) -> str:
    return f"sum({name}), {name}[:, 0]"
