"""Columns → tensors, one chunk at a time: selection, defines, sorting, padding, statistics.

Pure functions over flat numpy buffers (see :class:`rntensor.sources.Jagged`); no I/O and no
per-event Python.  The output of :func:`transform` is a *table*: ``dict[str, np.ndarray]`` in
exactly the layout :mod:`rntensor.cache` stores and the loader consumes:

* flat output ``name`` → ``(n, F)``
* padded output ``name`` → ``(n, L, F)`` and ``name_mask`` → ``(n, L)`` bool
* ragged output ``name`` → values ``(total, F)`` and ``name_offsets`` → ``(n + 1,)`` int64
* labels → ``(n,)`` int64 (or the label's dtype), weights → ``(n,)`` float32,
  keep columns → ``(n,)``, ``_entry`` → ``(n,)`` int64 entry numbers in the source.

Padding works on offsets: one stable argsort of a combined (event, sort key) integer key,
then a linear scatter of the kept objects into a preallocated array.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rntensor.errors import SchemaError
from rntensor.schema import ResolvedSchema
from rntensor.schema.expr import evaluate
from rntensor.schema.spec import OutputSpec
from rntensor.sources import Column, Jagged, event_index

__all__ = ["FieldStats", "Table", "column_layout", "merge_stats", "pad", "transform"]

Table = dict[str, np.ndarray]


@dataclass
class FieldStats:
    """Mergeable running statistics of one feature (count, sum, sum of squares, min, max)."""

    count: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")

    @classmethod
    def of(cls, values: np.ndarray) -> FieldStats:
        if len(values) == 0:
            return cls()
        v64 = values.astype(np.float64)  # a copy of our own, squared in place below
        total = float(v64.sum())
        if not np.isfinite(total):  # rare: drop NaN/inf before summing
            v64 = v64[np.isfinite(v64)]
            if len(v64) == 0:
                return cls()
            total = float(v64.sum())
        lo, hi = float(v64.min()), float(v64.max())
        # not np.dot: BLAS starts threads of its own that fight the conversion's threads
        np.multiply(v64, v64, out=v64)
        return cls(len(v64), total, float(v64.sum()), lo, hi)

    def merge(self, other: FieldStats) -> FieldStats:
        return FieldStats(
            self.count + other.count,
            self.sum + other.sum,
            self.sumsq + other.sumsq,
            min(self.min, other.min),
            max(self.max, other.max),
        )

    def to_dict(self) -> dict[str, float]:
        n = self.count
        mean = self.sum / n if n else 0.0
        var = max(self.sumsq / n - mean * mean, 0.0) if n else 0.0
        return {
            "count": n,
            "sum": self.sum,
            "sumsq": self.sumsq,
            "mean": mean,
            "std": float(np.sqrt(var)),
            "min": self.min if n else 0.0,
            "max": self.max if n else 0.0,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldStats:
        n = int(d.get("count", 0))
        if not n:
            return cls()
        return cls(n, float(d["sum"]), float(d["sumsq"]), float(d["min"]), float(d["max"]))


Stats = dict[str, dict[str, FieldStats]]


def merge_stats(a: Stats, b: Stats) -> Stats:
    """Merge two ``{output: {field: FieldStats}}`` maps."""
    out: Stats = {k: dict(v) for k, v in a.items()}
    for name, fields in b.items():
        dest = out.setdefault(name, {})
        for f, s in fields.items():
            dest[f] = dest[f].merge(s) if f in dest else s
    return out


def _sortable_u32(key: np.ndarray) -> np.ndarray:
    """Map float keys to uint32 whose unsigned order is the float order (NaN last)."""
    k = key.astype(np.float32, copy=False)
    if np.isnan(k).any():
        k = np.where(np.isnan(k), np.float32(np.inf), k)
    bits = k.view(np.uint32)
    # negative floats: flip every bit; positive: flip the sign bit
    flip = (bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF)
    flip |= np.uint32(0x80000000)
    flip ^= bits
    return flip


def pad(
    offsets: np.ndarray,
    contents: list[np.ndarray],
    *,
    length: int,
    events: np.ndarray | None = None,
    sort_key: np.ndarray | None = None,
    pad_value: float = 0.0,
    dtype: str | np.dtype = "float32",
    with_kept: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Pad or clip objects of one collection to ``length`` per event.

    Args:
        offsets: ``(N + 1,)`` offsets shared by every content array.
        contents: one flat array per feature.
        length: objects kept per event.
        events: indices of the events to keep (a selection), in order; ``None`` keeps all.
        sort_key: flat key (aligned with ``contents``); objects are ordered by it
            (ascending, stable) before clipping.
        pad_value: value of empty slots.
        dtype: output dtype.
        with_kept: also return the kept values (for statistics).

    Returns:
        ``(values (n, L, F), mask (n, L) bool, kept)`` where ``kept[j]`` holds the values of
        feature ``j`` that made it in (empty without ``with_kept``).
    """
    src, parents, local, n = _objects(offsets, events, sort_key)
    keep = local < length
    if not keep.all():
        src, parents, local = src[keep], parents[keep], local[keep]
    dest = parents * length
    dest += local
    # every output slot names its source row; empty slots name an extra row of pad values.
    # Then one row gather (np.take along axis 0) builds the (n * L, F) block: a gather
    # streams its output, where a scatter per feature would write with a stride.
    total = len(contents[0]) if contents else 0
    slot = np.full(n * length, total, dtype=np.intp)
    slot[dest] = src
    stacked = np.empty((total + 1, len(contents)), dtype=dtype)
    for j, c in enumerate(contents):
        stacked[:total, j] = c
    stacked[total] = pad_value
    out = np.take(stacked, slot, axis=0, mode="clip")
    mask = slot != total
    kept = [np.take(c, src) for c in contents] if with_kept else []
    return out.reshape(n, length, len(contents)), mask.reshape(n, length), kept


def _objects(
    offsets: np.ndarray, events: np.ndarray | None, sort_key: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For the objects of the selected events, in output order: their flat source position,
    their (output) event number and their position inside the event."""
    if events is None:  # offsets[0] == 0 (the Jagged contract)
        starts = offsets[:-1]
        counts = np.diff(offsets)
    else:
        starts = np.take(offsets, events)
        counts = np.take(offsets, events + 1) - starts
    n = len(counts)
    total = int(counts.sum())
    parents = event_index(counts)
    new_starts = np.cumsum(counts)
    new_starts -= counts
    local = np.arange(total, dtype=np.intp)
    local -= new_starts[parents]
    src = np.arange(total, dtype=np.intp) if events is None else local + starts[parents]
    if sort_key is not None and total:
        combined = parents.astype(np.uint64)
        combined <<= np.uint64(32)
        combined |= _sortable_u32(sort_key[src])
        src = src[np.argsort(combined, kind="stable")]  # sorting within events keeps parents/local
    return src, parents, local, n


def _per_event(col: Column, what: str) -> np.ndarray:
    if isinstance(col, Jagged):
        raise SchemaError(f"{what} must give one value per event, got a jagged value")
    return col


def column_layout(schema: ResolvedSchema) -> dict[str, dict[str, Any]]:
    """The manifest's ``columns`` section for a resolved schema (see cache/FORMAT.md)."""
    cols: dict[str, dict[str, Any]] = {}
    for o in schema.schema.outputs:
        f = len(o.fields)
        base = {"dtype": o.dtype, "fields": list(o.fields), "normalize": o.normalize}
        if o.kind == "padded":
            assert o.length is not None
            cols[o.name] = {"kind": "padded", "shape": [o.length, f], **base}
            cols[f"{o.name}_mask"] = {
                "kind": "mask",
                "shape": [o.length],
                "dtype": "bool",
                "of": o.name,
            }
        elif o.kind == "ragged":
            cols[o.name] = {"kind": "ragged", "shape": [f], **base}
        else:
            cols[o.name] = {"kind": "flat", "shape": [f], **base}
    for lb in schema.schema.labels:
        cols[lb.name] = {
            "kind": "label",
            "shape": [],
            "dtype": lb.dtype,
            "classes": lb.classes,
            "field": lb.field,
        }
    if schema.schema.weights:
        cols["weight"] = {
            "kind": "weight",
            "shape": [],
            "dtype": "float32",
            "field": schema.schema.weights,
        }
    for k in schema.schema.keep:
        cols[k] = {"kind": "keep", "shape": [], "dtype": schema.field_dtype(k)}
    cols["_entry"] = {"kind": "entry", "shape": [], "dtype": "int64"}
    return cols


def transform(
    schema: ResolvedSchema,
    columns: Mapping[str, Column],
    *,
    entry_start: int,
    n_entries: int,
    with_stats: bool = True,
) -> tuple[Table, Stats]:
    """Turn one chunk of source columns into a table (and its statistics).

    Args:
        schema: the schema resolved against the source's fields.
        columns: every field of ``schema.input_fields`` for the chunk.
        entry_start: entry number of the chunk's first event in its source.
        n_entries: number of events in the chunk.
        with_stats: also compute per-field statistics of every output.
    """
    spec = schema.schema
    entry = np.arange(entry_start, entry_start + n_entries, dtype=np.int64)
    # Defines are evaluated on every event (elementwise work is cheap); the selection then
    # becomes an index that each output composes into its own gather, so no jagged column
    # is ever materialized twice.
    env = schema.evaluate_defines(columns, n_entries)
    events: np.ndarray | None = None
    if schema.selection is not None:
        sel = np.asarray(
            _per_event(evaluate(schema.selection, env, n_entries), "selection"), dtype=bool
        )
        if not sel.all():
            events = np.flatnonzero(sel)
            entry = entry[events]
    n = len(entry)

    table: Table = {}
    stats: Stats = {}
    for o in spec.outputs:
        _output(o, schema, env, events, n, table, stats, with_stats)
    for lb in spec.labels:
        v = _select(_per_event(env[lb.field], f"label {lb.name!r}"), events)
        table[lb.name] = np.asarray(v).astype(lb.dtype, copy=False)
        if lb.classes is not None and n:
            lo, hi = table[lb.name].min(), table[lb.name].max()
            if lo < 0 or hi >= lb.classes:
                bad = lo if lo < 0 else hi
                raise SchemaError(
                    f"label {lb.name!r} (field {lb.field!r}) has value {bad}, outside the "
                    f"{lb.classes} classes [0, {lb.classes}); fix 'classes' or the field"
                )
    if spec.weights:
        w = _select(_per_event(env[spec.weights], "weights"), events)
        table["weight"] = np.asarray(w, dtype=np.float32)
    for k in spec.keep:
        table[k] = np.asarray(_select(_per_event(env[k], f"keep column {k!r}"), events))
    table["_entry"] = entry
    return table, stats


def _select(values: np.ndarray, events: np.ndarray | None) -> np.ndarray:
    return values if events is None else values[events]


def _output(
    o: OutputSpec,
    schema: ResolvedSchema,
    env: Mapping[str, Column],
    events: np.ndarray | None,
    n: int,
    table: Table,
    stats: Stats,
    with_stats: bool,
) -> None:
    cols = [env[f] for f in o.fields]
    if o.kind == "flat":
        arr = np.empty((n, len(cols)), dtype=o.dtype)
        for j, c in enumerate(cols):
            arr[:, j] = _select(_per_event(c, f"output {o.name!r}"), events)
        table[o.name] = arr
        if with_stats:
            stats[o.name] = {f: FieldStats.of(arr[:, j]) for j, f in enumerate(o.fields)}
        return
    jag = [c for c in cols if isinstance(c, Jagged)]
    if not jag:
        raise SchemaError(f"output {o.name!r} has no jagged field; make it a flat output")
    offsets = jag[0].offsets
    contents = []
    parents: np.ndarray | None = None  # event of every object, for per-event values

    def broadcast(v: np.ndarray) -> np.ndarray:
        nonlocal parents
        if parents is None:
            parents = event_index(np.diff(offsets))
        return v[parents]

    for f, c in zip(o.fields, cols, strict=True):
        if isinstance(c, Jagged):
            if c.offsets is not offsets and not np.array_equal(c.offsets, offsets):
                raise SchemaError(
                    f"output {o.name!r}: field {f!r} has a different number of objects per event "
                    f"than {o.fields[0]!r}; put fields of one collection in one output"
                )
            contents.append(c.content)
        else:  # per-event value broadcast to every object
            contents.append(broadcast(c))
    key = None
    sort_expr = schema.sort_keys.get(o.name)
    if sort_expr is not None:
        k = evaluate(sort_expr, env, len(offsets) - 1)
        key = k.content if isinstance(k, Jagged) else broadcast(k)
    if o.kind == "padded":
        assert o.length is not None
        values, mask, kept = pad(
            offsets,
            contents,
            length=o.length,
            events=events,
            sort_key=key,
            pad_value=o.pad_value,
            dtype=o.dtype,
            with_kept=with_stats,
        )
        table[o.name] = values
        table[f"{o.name}_mask"] = mask
        if with_stats:
            stats[o.name] = {f: FieldStats.of(v) for f, v in zip(o.fields, kept, strict=True)}
        return
    # ragged: the selected events' objects, in sort order, values (total, F) + offsets
    src, parents, _, n_sel = _objects(offsets, events, key)
    values = np.empty((len(src), len(contents)), dtype=o.dtype)
    for j, c in enumerate(contents):
        values[:, j] = c[src]
    new_offsets = np.zeros(n_sel + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=n_sel), out=new_offsets[1:])
    table[o.name] = values
    table[f"{o.name}_offsets"] = new_offsets
    if with_stats:
        stats[o.name] = {f: FieldStats.of(values[:, j]) for j, f in enumerate(o.fields)}
