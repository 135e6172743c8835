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

import ast
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rntensor.errors import SchemaError, did_you_mean
from rntensor.sources import Column, Jagged

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

MAX_LENGTH = 4000
MAX_DEPTH = 100

_FLOAT_NAMES = (
    "sqrt", "exp", "log", "log10", "log1p", "sin", "cos", "tan", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "floor", "ceil",
)  # fmt: skip
_FLOAT_FUNCS = {name: getattr(np, name) for name in _FLOAT_NAMES}
_FUNCS_1 = {
    **_FLOAT_FUNCS,
    "abs": np.abs,
    "sign": np.sign,
    "isnan": np.isnan,
    "isfinite": np.isfinite,
}
_FUNCS_2 = {"arctan2": np.arctan2, "hypot": np.hypot, "minimum": np.minimum, "maximum": np.maximum}
_REDUCTIONS = ("sum", "count", "min", "max", "mean", "any", "all")
FUNCTIONS: dict[str, int] = {
    **dict.fromkeys(_FUNCS_1, 1),
    **dict.fromkeys(_FUNCS_2, 2),
    "where": 3,
    **dict.fromkeys(_REDUCTIONS, 1),
}
"""Every function an expression may call, with its number of arguments."""

_BINOPS: dict[type, str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Pow: "**",
    ast.Mod: "%",
}
_CMPOPS: dict[type, str] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
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

# tokens users reach for that are not in the grammar, with what to write instead
_REJECTED: dict[type, tuple[str, str]] = {
    ast.BitAnd: ("&", "use 'and'"),
    ast.BitOr: ("|", "use 'or'"),
    ast.BitXor: ("^", "use '**' for powers"),
    ast.Invert: ("~", "use 'not'"),
    ast.FloorDiv: ("//", "use floor(a / b)"),
    ast.MatMult: ("@", ""),
    ast.LShift: ("<<", ""),
    ast.RShift: (">>", ""),
    ast.Is: ("is", "use '=='"),
    ast.IsNot: ("is not", "use '!='"),
    ast.In: ("in", ""),
    ast.NotIn: ("not in", ""),
    ast.IfExp: ("if ... else", "use where(condition, a, b)"),
    ast.Lambda: ("lambda", ""),
    ast.Dict: ("{...}", ""),
    ast.Set: ("{...}", ""),
    ast.List: ("[...]", ""),
    ast.Tuple: ("a, b", "a tuple is not a value"),
    ast.Starred: ("*", ""),
    ast.NamedExpr: (":=", ""),
    ast.JoinedStr: ("f-string", ""),
    ast.Await: ("await", ""),
    ast.ListComp: ("comprehension", ""),
    ast.SetComp: ("comprehension", ""),
    ast.DictComp: ("comprehension", ""),
    ast.GeneratorExp: ("comprehension", ""),
    ast.Yield: ("yield", ""),
    ast.YieldFrom: ("yield", ""),
    ast.Slice: (":", ""),
}
_FUNC_HINTS = {
    "first": "write x[:, 0] for the first object of every event or x[:, :k] for the first k",
    "last": "write x[:, -1] for the last object of every event",
    "len": "write count(x) for the number of objects",
    "num": "write count(x) for the number of objects",
    "size": "write count(x) for the number of objects",
    "pow": "write a ** b",
    "fabs": "write abs(x)",
    "atan2": "write arctan2(y, x)",
    "ifelse": "write where(condition, a, b)",
}

Scalar = bool | int | float
Value = np.ndarray | Jagged | bool | int | float


# -- the tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    def children(self) -> tuple[_Node, ...]:
        return ()


@dataclass(frozen=True)
class _Const(_Node):
    value: Scalar


@dataclass(frozen=True)
class _Name(_Node):
    path: str


@dataclass(frozen=True)
class _Op(_Node):
    """An operator or function applied to arguments (``op`` is the token or name)."""

    op: str
    args: tuple[_Node, ...]

    def children(self) -> tuple[_Node, ...]:
        return self.args


@dataclass(frozen=True)
class _Objects(_Node):
    """``x[:, i]`` (``stop`` is ``None`` and ``single``) or ``x[:, start:stop]``."""

    arg: _Node
    start: int | None
    stop: int | None
    single: bool
    token: str

    def children(self) -> tuple[_Node, ...]:
        return (self.arg,)


@dataclass(frozen=True)
class Expr:
    """A parsed expression.

    Args:
        text: the expression as written.
        root: the checked tree (internal).
        names: every field path or define name the expression references.
    """

    text: str
    root: _Node
    names: frozenset[str]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def __reduce__(self) -> Any:  # travels to workers as text, re-parsed on arrival
        return (parse, (self.text,))


# -- parsing ------------------------------------------------------------------------------


def parse(text: str) -> Expr:
    """Parse and check ``text``; any token outside the grammar is a :class:`SchemaError`."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SchemaError(f"an expression must be text, got {type(text).__name__} {text!r}")
    text = str(text).strip()
    if not text:
        raise SchemaError("empty expression; write a field name, a number or a formula")
    if len(text) > MAX_LENGTH:
        raise SchemaError(
            f"expression of {len(text)} characters is longer than the limit of {MAX_LENGTH}; "
            f"split it into several defines (starts with {text[:40]!r})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning on '1and' and the like
            tree = ast.parse(" ".join(text.split()), mode="eval")
    except SyntaxError as err:
        where = f" at column {err.offset}" if err.offset else ""
        raise SchemaError(
            f"invalid expression {_short(text)}: {err.msg}{where}; expected a formula such as "
            "'Jet_pt * cos(Jet_phi)'"
        ) from err
    except (RecursionError, MemoryError, ValueError) as err:
        raise SchemaError(
            f"expression {_short(text)} is too deeply nested to parse; split it into defines"
        ) from err
    _check_depth(tree.body, text)
    root = _Builder(text).build(tree.body)
    names: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, _Name):
            names.add(node.path)
        stack.extend(node.children())
    return Expr(text, root, frozenset(names))


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _check_depth(node: ast.AST, text: str) -> None:
    stack = [(node, 1)]
    while stack:
        n, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SchemaError(
                f"expression {_short(text)} is nested more than {MAX_DEPTH} levels deep; "
                "split it into several defines"
            )
        stack.extend((c, depth + 1) for c in ast.iter_child_nodes(n))


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, node: ast.AST, token: str, hint: str = "") -> SchemaError:
        col = getattr(node, "col_offset", None)
        where = f" at column {col + 1}" if col is not None else ""
        return SchemaError(
            f"{token!r} is not allowed in expression {_short(self.text)}{where}"
            + (f"; {hint}" if hint else "")
            + "; expressions use numbers, field names, + - * / ** %, comparisons, "
            "and/or/not and the functions " + ", ".join(sorted(FUNCTIONS))
        )

    def segment(self, node: ast.AST) -> str:
        seg = ast.get_source_segment(" ".join(self.text.split()), node)
        return seg if seg else type(node).__name__

    def reject(self, node: ast.AST) -> SchemaError:
        token, hint = _REJECTED.get(type(node), (self.segment(node), ""))
        return self.fail(node, token, hint)

    def build(self, node: ast.AST) -> _Node:
        if isinstance(node, ast.Constant):
            return _Const(self.constant(node))
        if isinstance(node, ast.Name):
            return _Name(node.id)
        if isinstance(node, ast.Attribute):
            return _Name(self.path(node))
        if isinstance(node, ast.UnaryOp):
            arg = self.build(node.operand)
            if isinstance(node.op, ast.USub):
                if isinstance(arg, _Const) and not isinstance(arg.value, bool):
                    return _Const(-arg.value)
                return _Op("neg", (arg,))
            if isinstance(node.op, ast.UAdd):
                return _Op("pos", (arg,))
            if isinstance(node.op, ast.Not):
                return _Op("not", (arg,))
            raise self.reject(node.op)
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.reject(node.op)
            return _Op(op, (self.build(node.left), self.build(node.right)))
        if isinstance(node, ast.BoolOp):
            name = "and" if isinstance(node.op, ast.And) else "or"
            return _Op(name, tuple(self.build(v) for v in node.values))
        if isinstance(node, ast.Compare):
            left = self.build(node.left)
            parts: list[_Node] = []
            for cmp, right_node in zip(node.ops, node.comparators, strict=True):
                op = _CMPOPS.get(type(cmp))
                if op is None:
                    raise self.reject(cmp)
                right = self.build(right_node)
                parts.append(_Op(op, (left, right)))
                left = right
            return parts[0] if len(parts) == 1 else _Op("and", tuple(parts))
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        raise self.reject(node)

    def constant(self, node: ast.Constant) -> Scalar:
        v = node.value
        if isinstance(v, (bool, float)):
            return v
        if isinstance(v, int):
            if abs(v) >= 2**63:
                raise self.fail(
                    node,
                    self.segment(node),
                    "integers must fit in 64 bits; write a float such as 1e20",
                )
            return v
        raise self.fail(node, self.segment(node), "only numbers and field names are values")

    def path(self, node: ast.Attribute) -> str:
        parts = [node.attr]
        value: ast.AST = node.value
        while isinstance(value, ast.Attribute):
            parts.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name):
            raise self.fail(
                node, self.segment(node), "'.' only joins field names into a path such as PV.x"
            )
        parts.append(value.id)
        return ".".join(reversed(parts))

    def call(self, node: ast.Call) -> _Node:
        func = node.func
        if isinstance(func, ast.Attribute):
            seg = self.segment(func)
            head = seg.split(".", 1)[0]
            if head in ("np", "numpy", "math", "ak", "awkward") and func.attr in FUNCTIONS:
                raise self.fail(func, seg + "()", f"write {func.attr}(...) without '{head}.'")
            if func.attr in FUNCTIONS:
                raise self.fail(
                    func,
                    seg + "()",
                    f"method calls are not supported; write "
                    f"{func.attr}({self.segment(func.value)})",
                )
            raise self.fail(func, seg + "()", "method calls are not supported")
        if not isinstance(func, ast.Name):
            raise self.fail(func, self.segment(func), "only named functions can be called")
        name = func.id
        if name not in FUNCTIONS:
            hint = _FUNC_HINTS.get(name) or did_you_mean(name, FUNCTIONS).strip()
            raise SchemaError(
                f"unknown function {name!r} in expression {_short(self.text)}"
                + (f"; {hint}" if hint else "")
                + "; functions are "
                + ", ".join(sorted(FUNCTIONS))
            )
        if node.keywords:
            kw = node.keywords[0]
            token = f"{kw.arg}=" if kw.arg else "**"
            raise self.fail(kw, token, f"{name}() takes positional arguments only")
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.reject(a)
        want = FUNCTIONS[name]
        if len(node.args) != want:
            raise SchemaError(
                f"{name}() takes {want} argument{'s' if want > 1 else ''}, got "
                f"{len(node.args)} in expression {_short(self.text)}"
            )
        return _Op(name, tuple(self.build(a) for a in node.args))

    def subscript(self, node: ast.Subscript) -> _Node:
        token = "[" + self.segment(node.slice) + "]"
        hint = "write x[:, i] for the i-th object of every event or x[:, a:b] for objects a to b"
        sl = node.slice
        if not (isinstance(sl, ast.Tuple) and len(sl.elts) == 2):
            raise self.fail(node, token, hint)
        first, second = sl.elts
        if not (
            isinstance(first, ast.Slice)
            and first.lower is None
            and first.upper is None
            and first.step is None
        ):
            raise self.fail(node, token, hint)
        arg = self.build(node.value)
        if isinstance(second, ast.Slice):
            if second.step is not None:
                raise self.fail(node, token, "steps are not supported; " + hint)
            start = None if second.lower is None else self.index(second.lower, token, hint)
            stop = None if second.upper is None else self.index(second.upper, token, hint)
            return _Objects(arg, start, stop, False, token)
        return _Objects(arg, self.index(second, token, hint), None, True, token)

    def index(self, node: ast.AST, token: str, hint: str) -> int:
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
            and node.value < 2**31
        ):
            return sign * node.value
        raise self.fail(node, token, "object positions are integer literals; " + hint)


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


# -- evaluation ---------------------------------------------------------------------------


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
        counts = np.diff(offsets)
        raws = [
            a.content
            if isinstance(a, Jagged)
            else np.repeat(a, counts)
            if isinstance(a, np.ndarray)
            else a
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
                per = bound if bound >= 0 else np.repeat(counts + bound, counts)
                keep &= cmp(local, per)
        return Jagged(new_offsets, content[keep])


def _clip_bound(bound: int | None, counts: np.ndarray, default: int | None) -> np.ndarray:
    """Python slice bounds per event, clipped to ``[0, count]``."""
    if bound is None:
        return np.zeros_like(counts) if default == 0 else counts.copy()
    b = np.full_like(counts, bound) if bound >= 0 else counts + bound
    return np.clip(b, 0, counts)
