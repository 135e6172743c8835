"""The vectorized evaluator: a parsed :class:`~rntensor.schema.expr.Expr` on flat buffers.

See :mod:`rntensor.schema.expr` for the type rules it implements.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rntensor.errors import SchemaError, did_you_mean
from rntensor.schema._parse import (
    _FLOAT_FUNCS,
    _FUNCS_1,
    _FUNCS_2,
    _REDUCTIONS,
    Expr,
    _Const,
    _Name,
    _Node,
    _Objects,
    _Op,
    _short,
    parse,
)
from rntensor.sources import Column, Jagged, event_index

__all__ = ["evaluate", "evaluate_selection"]


_NP_BIN = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.true_divide,
    "**": np.power,
    "%": np.mod,
}
_NP_CMP = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}

Value = np.ndarray | Jagged | bool | int | float


def evaluate(expr: Expr | str, env: Mapping[str, Column], n_events: int) -> Column:
    """Evaluate ``expr`` on the columns of ``env`` (each of ``n_events`` events).

    Returns a 1-d array (one value per event; constants are broadcast) or a
    :class:`~rntensor.sources.Jagged`.  Every failure is a :class:`SchemaError`.
    """
    if isinstance(expr, str):
        expr = parse(expr)
    with np.errstate(all="ignore"):
        try:
            out = _Evaluator(env, n_events, expr.text).run(expr.root)
        except SchemaError:
            raise
        except (TypeError, ValueError, OverflowError, IndexError) as err:
            raise SchemaError(f"cannot evaluate {_short(expr.text)}: {err}") from err
    if isinstance(out, (np.ndarray, Jagged)):
        return out
    return np.full(n_events, out, dtype=np.asarray(out).dtype)


def evaluate_selection(expr: Expr | str, env: Mapping[str, Column], n_events: int) -> np.ndarray:
    """Evaluate a selection: it must give one bool per event."""
    if isinstance(expr, str):
        expr = parse(expr)
    out = evaluate(expr, env, n_events)
    if isinstance(out, Jagged):
        raise SchemaError(
            f"selection {_short(expr.text)} gives one value per object, not per event; "
            "reduce it with any(...) or all(...)"
        )
    if out.dtype != bool:
        raise SchemaError(
            f"selection {_short(expr.text)} gives {out.dtype} values, not a condition; "
            "compare it, e.g. 'nJet > 0'"
        )
    return out


def _is_float(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return x.dtype.kind in "fc"
    return isinstance(x, float)


def _as_np_scalar(x: Any) -> Any:
    if isinstance(x, bool):
        return np.bool_(x)
    if isinstance(x, int):
        return np.int64(x)
    if isinstance(x, float):
        return np.float64(x)
    return x


def _coerce(raws: list[Any], *, arith: bool = False, to_float: bool = False) -> list[Any]:
    """Operands ready for a numpy call with results that never depend on the data.

    ``to_float``: non-float operands become ``float64``.  ``arith``: bools count as integers
    (``float`` of the other operand when it is a float array).  Python ints meeting integer
    arrays become int64 so that no value is out of bounds for a small dtype.
    """
    arrays = [r for r in raws if isinstance(r, np.ndarray)]
    if not arrays:  # constants: fold in numpy, bounded in time
        raws = [_as_np_scalar(r) for r in raws]
        if to_float:
            return [r if r.dtype.kind == "f" else np.float64(r) for r in raws]
        if arith:
            return [np.int64(r) if r.dtype == bool else r for r in raws]
        return raws
    float_arrays = [a for a in arrays if a.dtype.kind == "f"]
    out: list[Any] = []
    for r in raws:
        if isinstance(r, np.ndarray):
            if to_float and r.dtype.kind != "f":
                r = r.astype(np.float64)
            elif arith and r.dtype == bool:
                r = r.astype(float_arrays[0].dtype if float_arrays else np.int64)
        elif to_float:
            r = float(r)
        elif isinstance(r, bool):
            r = int(r) if arith else r
        if isinstance(r, int) and not isinstance(r, bool) and not float_arrays:
            r = np.int64(r)
        out.append(r)
    return out


def _segment_reduce(
    ufunc: Any, content: np.ndarray, offsets: np.ndarray, identity: Any, dtype: Any
) -> np.ndarray:
    counts = np.diff(offsets)
    out = np.full(len(counts), identity, dtype=dtype)
    nonempty = counts > 0
    if len(content):
        # reduceat over the non-empty segments only: each then ends where the next begins
        out[nonempty] = ufunc.reduceat(content.astype(dtype, copy=False), offsets[:-1][nonempty])
    return out


class _Evaluator:
    def __init__(self, env: Mapping[str, Column], n_events: int, text: str) -> None:
        self.env = env
        self.n = int(n_events)
        self.text = text

    def run(self, node: _Node) -> Value:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Name):
            return self.name(node.path)
        if isinstance(node, _Objects):
            return self.objects(node)
        assert isinstance(node, _Op)
        op = node.op
        if op in _REDUCTIONS:
            return self.reduce(op, self.run(node.args[0]))
        args = [self.run(a) for a in node.args]
        raws, offsets = self.align(args)
        return self.wrap(self.apply(op, raws), offsets)

    def name(self, path: str) -> Value:
        try:
            col = self.env[path]
        except KeyError:
            raise SchemaError(
                f"unknown field {path!r} in expression {_short(self.text)};"
                f"{did_you_mean(path, self.env) or ' it is neither a field nor a define'}"
            ) from None
        if len(col) != self.n:
            raise SchemaError(f"column {path!r} has {len(col)} events, expected {self.n}")
        if isinstance(col, (Jagged, np.ndarray)):
            return col
        return np.asarray(col)

    def align(self, args: list[Value]) -> tuple[list[Any], np.ndarray | None]:
        offsets: np.ndarray | None = None
        for a in args:
            if isinstance(a, Jagged):
                if offsets is None:
                    offsets = a.offsets
                elif a.offsets is not offsets and not np.array_equal(a.offsets, offsets):
                    raise SchemaError(
                        f"expression {_short(self.text)} combines jagged values with different "
                        "numbers of objects per event; combine fields of one collection or "
                        "reduce one side first (sum(x), x[:, 0])"
                    )
        if offsets is None:
            return list(args), None
        parents = (
            event_index(np.diff(offsets)) if any(isinstance(a, np.ndarray) for a in args) else None
        )
        raws = [
            a.content if isinstance(a, Jagged) else a[parents] if isinstance(a, np.ndarray) else a
            for a in args
        ]
        return raws, offsets

    @staticmethod
    def wrap(raw: Any, offsets: np.ndarray | None) -> Value:
        if offsets is not None:
            return Jagged(offsets, np.asarray(raw))
        if isinstance(raw, np.ndarray) and raw.ndim == 0:
            return raw.item()
        if isinstance(raw, np.generic):
            return raw.item()
        return raw

    @staticmethod
    def apply(op: str, raws: list[Any]) -> Any:
        if op in ("+", "-", "*", "%"):
            return _NP_BIN[op](*_coerce(raws, arith=True))
        if op in ("/", "**"):
            return _NP_BIN[op](*_coerce(raws, to_float=True))
        if op in _NP_CMP:
            return _NP_CMP[op](*_coerce(raws))
        if op == "neg":
            return np.negative(_coerce(raws, arith=True)[0])
        if op == "pos":
            return np.positive(_coerce(raws, arith=True)[0])
        if op == "not":
            return np.logical_not(_coerce(raws)[0])
        if op in ("and", "or"):
            fn: Any = np.logical_and if op == "and" else np.logical_or
            vals = _coerce(raws)
            out = fn(vals[0], vals[1])
            for v in vals[2:]:
                out = fn(out, v)
            return out
        if op in _FLOAT_FUNCS or op in ("arctan2", "hypot", "isnan", "isfinite"):
            fn = _FLOAT_FUNCS.get(op) or _FUNCS_1.get(op) or _FUNCS_2[op]
            return fn(*_coerce(raws, to_float=True))
        if op in ("abs", "sign"):
            return _FUNCS_1[op](*_coerce(raws, arith=True))
        if op in ("minimum", "maximum"):
            return _FUNCS_2[op](*_coerce(raws))
        if op == "where":
            cond, a, b = _coerce(raws)
            cond = cond.astype(bool) if isinstance(cond, np.ndarray) else bool(cond)
            return np.where(cond, a, b)
        raise AssertionError(op)  # pragma: no cover - the parser admits no other op

    def reduce(self, op: str, value: Value) -> np.ndarray:
        if not isinstance(value, Jagged):
            raise SchemaError(
                f"{op}() reduces the objects of each event, but its argument is one value per "
                f"event in expression {_short(self.text)}; apply it to a jagged field"
            )
        content, offsets = value.content, value.offsets
        kind = content.dtype.kind
        if op == "count":
            return np.diff(offsets).astype(np.int64)
        if op == "sum":
            dtype = content.dtype if kind in "fc" else np.dtype(np.int64)
            return _segment_reduce(np.add, content, offsets, 0, dtype)
        if op in ("any", "all"):
            fn: Any = np.logical_or if op == "any" else np.logical_and
            return _segment_reduce(fn, content != 0, offsets, op == "all", bool)
        fdtype = content.dtype if kind == "f" else np.dtype(np.float64)
        if op == "mean":
            s = _segment_reduce(np.add, content, offsets, 0.0, np.float64)
            out: np.ndarray = s / np.diff(offsets)
            return out
        fn = np.minimum if op == "min" else np.maximum
        return _segment_reduce(fn, content, offsets, np.nan, fdtype)

    def objects(self, node: _Objects) -> Value:
        value = self.run(node.arg)
        if not isinstance(value, Jagged):
            raise SchemaError(
                f"{node.token} needs objects, but its argument is one value per event in "
                f"expression {_short(self.text)}"
            )
        content, offsets = value.content, value.offsets
        counts = np.diff(offsets)
        if node.single:
            assert node.start is not None
            i = node.start
            has = counts > i if i >= 0 else counts >= -i
            pos = (offsets[:-1] + i if i >= 0 else offsets[1:] + i)[has]
            fdtype = content.dtype if content.dtype.kind == "f" else np.dtype(np.float64)
            out = np.full(len(counts), np.nan, dtype=fdtype)
            out[has] = content[pos]
            return out
        start = _clip_bound(node.start, counts, 0)
        stop = _clip_bound(node.stop, counts, None)
        new_counts = np.maximum(stop - start, 0)
        new_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(new_counts, out=new_offsets[1:])
        local = value.local_index()
        keep = np.ones(len(content), dtype=bool)
        for bound, cmp in ((node.start, np.greater_equal), (node.stop, np.less)):
            if bound is not None:
                # a bound >= 0 is the same for every event; a negative one counts from the end
                per = bound if bound >= 0 else (counts + bound)[value.parents()]
                keep &= cmp(local, per)
        return Jagged(new_offsets, content[keep])


def _clip_bound(bound: int | None, counts: np.ndarray, default: int | None) -> np.ndarray:
    """Python slice bounds per event, clipped to ``[0, count]``."""
    if bound is None:
        return np.zeros_like(counts) if default == 0 else counts.copy()
    b = np.full_like(counts, bound) if bound >= 0 else counts + bound
    return np.clip(b, 0, counts)
