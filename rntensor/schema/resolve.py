"""Checking a loaded :class:`~rntensor.schema.spec.Schema` against the fields of an input.

:func:`resolve` is the second half of :func:`rntensor.schema.load.validate`: every name must
be a field or a define of a supported type, every output, label and selection must have the
shape it needs, and each expression is evaluated once on dummy columns to learn its dtype.
The result is a :class:`~rntensor.schema.spec.ResolvedSchema`.  Pure: depends on (schema,
fields) only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from rntensor.errors import SchemaError, did_you_mean
from rntensor.schema.expr import Expr, evaluate, infer_collection, parse
from rntensor.schema.spec import (
    OutputSpec,
    ResolvedLabel,
    ResolvedOutput,
    ResolvedSchema,
    Schema,
)
from rntensor.sources import Column, FieldInfo, Jagged

__all__ = ["resolve"]


def resolve(schema: Schema, fields: Mapping[str, FieldInfo]) -> ResolvedSchema:
    """Check a schema already through :func:`~rntensor.schema.load.load_schema` against
    ``fields``; see :func:`~rntensor.schema.load.validate`.

    Raises:
        SchemaError: naming the output, field or expression and what to change.
    """
    return _Resolver(schema, fields).run()


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
