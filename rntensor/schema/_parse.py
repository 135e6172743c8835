"""The expression grammar: the parsed tree, :class:`Expr` and the whitelisted parser.

See :mod:`rntensor.schema.expr` for the grammar and the type rules; this module turns text
into a checked tree of ``_Node`` values and never evaluates anything.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from rntensor.errors import SchemaError, did_you_mean

__all__ = ["FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "Expr", "parse"]

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
