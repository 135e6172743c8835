"""The expression engine: a whitelisted parser and a vectorized evaluator on flat buffers.

Expressions appear in a schema's ``selection``, ``define`` values and ``sort_by``.  They are
parsed with :mod:`ast` (``mode="eval"``) and every node is checked against a whitelist; the
text is never given to ``eval``, ``exec`` or ``compile``.  The grammar:

* numbers (``2``, ``1.5e3``, ``True``), field names (``Jet_pt``) and dotted paths of record
  sub-fields (``PV.x``, ``Track.pt``); a name may also be another ``define``;
* ``+ - * / ** %``, unary ``-``, comparisons (chains allowed), ``and``, ``or``, ``not``;
* elementwise functions: ``abs sign sqrt exp log log10 log1p sin cos tan arcsin arccos
  arctan sinh cosh tanh floor ceil isnan isfinite`` (one argument), ``arctan2 hypot minimum
  maximum`` (two) and ``where(condition, a, b)``;
* reductions over the objects of each event: ``sum count min max mean any all``;
* object selection: ``Jet_pt[:, i]`` is the ``i``-th object of every event (negative ``i``
  counts from the end) as one value per event, NaN where the event has too few objects;
  ``Jet_pt[:, a:b]`` keeps objects ``a`` to ``b`` of every event (still jagged).

Values are the column model of :mod:`rntensor.sources`: a per-event column is a 1-d
``numpy.ndarray``, a jagged column a :class:`~rntensor.sources.Jagged`.  Elementwise operations
on a jagged value work on its ``content`` and keep its offsets; a per-event value meets a
jagged one by repeating it once per object; two jagged values must share offsets (be of one
collection).  Type rules, chosen so results never depend on the data:

* ``bool`` takes part in arithmetic as an integer (``True + True == 2``);
* ``/``, ``**`` and the float functions give floats (integers become ``float64``);
* ``sum`` of integers or bools is ``int64``; ``count`` is ``int64``; ``any``/``all`` are bool
  (``False``/``True`` for an event with no objects);
* ``min``, ``max``, ``mean`` and ``x[:, i]`` give floats, NaN for an event without objects.

Pathological inputs are bounded: at most :data:`MAX_LENGTH` characters and
:data:`MAX_DEPTH` levels of nesting; integer literals must fit in int64 and arithmetic on
constants runs in numpy (``10**10**10`` is ``inf`` at once, never a huge Python integer).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rntensor.errors import SchemaError
from rntensor.schema._eval import evaluate, evaluate_selection
from rntensor.schema._parse import (
    _REDUCTIONS,
    FUNCTIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    Expr,
    _Const,
    _Name,
    _Node,
    _Objects,
    _Op,
    _short,
    parse,
)

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Expr",
    "evaluate",
    "evaluate_selection",
    "infer_collection",
    "is_jagged_result",
    "parse",
]


# -- static shape inference ---------------------------------------------------------------


def infer_collection(expr: Expr, collections: Mapping[str, str | None]) -> str | None:
    """The collection of the value ``expr`` produces, or ``None`` for one value per event.

    Args:
        expr: a parsed expression.
        collections: for every name, its collection (``None`` for per-event names); names
            not in the mapping are per-event.

    A slice ``x[:, a:b]`` is a collection of its own (``Jet[:, 0:3]``): it has other offsets.
    Combining two collections, reducing or indexing a per-event value is a
    :class:`SchemaError` naming the fields involved.
    """
    return _infer(expr.root, collections, expr.text)[0]


def is_jagged_result(expr: Expr, jagged_names: Iterable[str]) -> bool:
    """Whether ``expr`` gives a jagged column when the names in ``jagged_names`` are jagged
    (all of one collection) and every other name is per-event."""
    return infer_collection(expr, dict.fromkeys(jagged_names, "")) is not None


def _infer(node: _Node, colls: Mapping[str, str | None], text: str) -> tuple[str | None, str]:
    """(collection or None, an example name for messages)."""
    if isinstance(node, _Const):
        return None, ""
    if isinstance(node, _Name):
        return colls.get(node.path), node.path
    if isinstance(node, _Objects):
        coll, ex = _infer(node.arg, colls, text)
        if coll is None:
            raise SchemaError(
                f"{node.token} needs objects, but {ex or 'its argument'!r} is one value per "
                f"event in expression {_short(text)}; x[:, i] picks objects of a jagged field"
            )
        if node.single:
            return None, ex
        a = node.start or 0  # x[:, :3] and x[:, 0:3] have the same offsets
        b = "" if node.stop is None else node.stop
        return f"{coll}[:, {a}:{b}]", ex
    assert isinstance(node, _Op)
    found = [_infer(a, colls, text) for a in node.args]
    if node.op in _REDUCTIONS:
        coll, ex = found[0]
        if coll is None:
            raise SchemaError(
                f"{node.op}() reduces the objects of each event, but {ex or 'its argument'!r} "
                f"is already one value per event in expression {_short(text)}; drop the "
                f"{node.op}() or apply it to a jagged field"
            )
        return None, ex
    coll, ex = None, ""
    for c, e in found:
        if c is None:
            ex = ex or e
            continue
        if coll is None:
            coll, ex = c, e
        elif c != coll:
            raise SchemaError(
                f"expression {_short(text)} combines {_coll_label(coll)} ({ex}) and "
                f"{_coll_label(c)} ({e}), which have different numbers of objects per "
                f"event; reduce one side first (sum({e}), {e}[:, 0])"
            )
    return coll, ex


def _coll_label(coll: str) -> str:
    return coll if coll else "objects"
