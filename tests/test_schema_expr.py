"""The expression engine: grammar, type rules, and agreement with an awkward reference."""

from __future__ import annotations

import pickle
import string

import awkward as ak
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rntensor.errors import SchemaError
from rntensor.schema import parse_expr
from rntensor.schema.expr import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    evaluate,
    evaluate_selection,
    infer_collection,
    is_jagged_result,
    parse,
)
from rntensor.sources import Jagged


def jagged(lists: list[list[float]], dtype: str = "float64") -> Jagged:
    counts = np.array([len(x) for x in lists], dtype=np.int64)
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    content = np.array([v for x in lists for v in x], dtype=dtype)
    return Jagged(offsets, content)


@pytest.fixture
def env() -> dict[str, object]:
    return {
        "a": np.array([1.0, -2.0, 0.0, 4.0]),
        "n": np.array([0, 3, 1, 2], dtype=np.int32),
        "ok": np.array([True, False, True, True]),
        "Jet_pt": jagged([[], [50.0, 30.0, 10.0], [20.0], [5.0, 40.0]], "float32"),
        "Jet_eta": jagged([[], [0.5, -1.0, 2.0], [0.0], [1.0, -2.0]], "float32"),
        "Muon_pt": jagged([[3.0], [], [], [7.0, 8.0]], "float32"),
        "Muon_charge": jagged([[1], [], [], [-1, 1]], "int32"),
        "PV.x": np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32),
        "Track.pt": jagged([[1.0], [2.0], [], [3.0]], "float32"),
    }


def content(col: object) -> list[float]:
    assert isinstance(col, Jagged)
    return col.content.tolist()


# -- grammar ------------------------------------------------------------------------------


def test_parse_names_and_text() -> None:
    e = parse_expr("  Jet_pt * cos(Jet_phi) + PV.x - sum(Track.pt) ")
    assert e.text == "Jet_pt * cos(Jet_phi) + PV.x - sum(Track.pt)"
    assert e.names == {"Jet_pt", "Jet_phi", "PV.x", "Track.pt"}
    assert str(e) == e.text
    assert pickle.loads(pickle.dumps(e)) == e


def test_elementwise_keeps_offsets(env: dict) -> None:
    out = evaluate("Jet_pt * 2 + a", env, 4)
    assert isinstance(out, Jagged)
    assert out.offsets is env["Jet_pt"].offsets
    assert content(out) == [98.0, 58.0, 18.0, 40.0, 14.0, 84.0]
    assert out.dtype == np.float64  # float32 + float64 column
    assert evaluate("Jet_pt * 2", env, 4).dtype == np.float32  # constants do not widen


def test_jagged_with_jagged_of_one_collection(env: dict) -> None:
    out = evaluate("Jet_pt * (Jet_eta > 0)", env, 4)
    assert content(out) == [50.0, 0.0, 10.0, 0.0, 5.0, 0.0]


def test_jagged_of_two_collections_is_an_error(env: dict) -> None:
    with pytest.raises(SchemaError, match=r"different numbers of objects"):
        evaluate("Jet_pt + Muon_pt", env, 4)
    e = parse("Jet_pt + Muon_pt")
    with pytest.raises(SchemaError, match=r"Jet \(Jet_pt\) and Muon \(Muon_pt\).*sum\(Muon_pt\)"):
        infer_collection(e, {"Jet_pt": "Jet", "Muon_pt": "Muon"})


def test_reductions(env: dict) -> None:
    assert evaluate("sum(Jet_pt)", env, 4).tolist() == [0.0, 90.0, 20.0, 45.0]
    assert evaluate("count(Jet_pt)", env, 4).tolist() == [0, 3, 1, 2]
    assert evaluate("count(Jet_pt)", env, 4).dtype == np.int64
    assert np.array_equal(
        evaluate("min(Jet_pt)", env, 4), [np.nan, 10.0, 20.0, 5.0], equal_nan=True
    )
    assert np.array_equal(
        evaluate("max(Jet_pt)", env, 4), [np.nan, 50.0, 20.0, 40.0], equal_nan=True
    )
    assert np.allclose(evaluate("mean(Jet_pt)", env, 4), [np.nan, 30.0, 20.0, 22.5], equal_nan=True)
    assert evaluate("any(Jet_pt > 30)", env, 4).tolist() == [False, True, False, True]
    assert evaluate("all(Jet_pt > 15)", env, 4).tolist() == [True, False, True, False]
    assert evaluate("sum(Jet_pt > 15)", env, 4).tolist() == [0, 2, 1, 1]
    assert evaluate("sum(Muon_charge)", env, 4).dtype == np.int64


def test_reduce_per_event_is_an_error(env: dict) -> None:
    with pytest.raises(SchemaError, match=r"sum\(\).*'a' is already one value per event"):
        infer_collection(parse("sum(a)"), {"a": None})
    with pytest.raises(SchemaError, match=r"sum\(\) reduces"):
        evaluate("sum(a)", env, 4)


def test_object_index_and_slices(env: dict) -> None:
    first = evaluate("Jet_pt[:, 0]", env, 4)
    assert np.array_equal(first, [np.nan, 50.0, 20.0, 5.0], equal_nan=True)
    assert first.dtype == np.float32
    last = evaluate("Jet_pt[:, -1]", env, 4)
    assert np.array_equal(last, [np.nan, 10.0, 20.0, 40.0], equal_nan=True)
    second = evaluate("Muon_charge[:, 1]", env, 4)
    assert second.dtype == np.float64
    assert np.array_equal(second, [np.nan, np.nan, np.nan, 1.0], equal_nan=True)
    top2 = evaluate("Jet_pt[:, :2]", env, 4)
    assert top2.counts.tolist() == [0, 2, 1, 2]
    assert content(top2) == [50.0, 30.0, 20.0, 5.0, 40.0]
    mid = evaluate("Jet_pt[:, 1:-1]", env, 4)
    assert mid.counts.tolist() == [0, 1, 0, 0] and content(mid) == [30.0]
    assert evaluate("sum(Jet_pt[:, 1:])", env, 4).tolist() == [0.0, 40.0, 0.0, 40.0]


def test_slices_are_collections_of_their_own() -> None:
    colls = {"Jet_pt": "Jet", "Jet_eta": "Jet"}
    assert infer_collection(parse("Jet_pt[:, :3] * Jet_eta[:, :3]"), colls) == "Jet[:, 0:3]"
    with pytest.raises(SchemaError, match="different numbers of objects"):
        infer_collection(parse("Jet_pt[:, :3] + Jet_eta"), colls)
    assert infer_collection(parse("Jet_pt[:, 0] + 1"), colls) is None
    assert infer_collection(parse("Jet_pt[:, 0:3] - Jet_eta[:, :3]"), colls) == "Jet[:, 0:3]"


def test_is_jagged_result() -> None:
    jag = {"Jet_pt", "Track.pt"}
    assert is_jagged_result(parse("Jet_pt * 2"), jag)
    assert is_jagged_result(parse("Track.pt[:, :2]"), jag)
    assert is_jagged_result(parse("where(MET_pt > 1, Jet_pt, 0)"), jag)
    assert not is_jagged_result(parse("sum(Jet_pt) / MET_pt"), jag)
    assert not is_jagged_result(parse("Jet_pt[:, 0]"), jag)
    assert not is_jagged_result(parse("3"), jag)


def test_per_event_broadcasts_into_objects(env: dict) -> None:
    out = evaluate("where(Jet_pt > a * 10, Jet_pt, -1)", env, 4)
    assert content(out) == [50.0, 30.0, 10.0, 20.0, -1.0, -1.0]


def test_constants_broadcast_to_events(env: dict) -> None:
    out = evaluate("1 + 2", env, 4)
    assert out.tolist() == [3, 3, 3, 3] and out.dtype == np.int64
    assert evaluate("True", env, 0).shape == (0,)


def test_dotted_paths(env: dict) -> None:
    assert evaluate("PV.x * 10", env, 4).tolist() == pytest.approx([1, 2, 3, 4])
    assert evaluate("max(Track.pt) >= 2", env, 4).tolist() == [False, True, False, True]


def test_type_rules(env: dict) -> None:
    assert evaluate("ok + ok", env, 4).tolist() == [2, 0, 2, 2]
    assert evaluate("-ok", env, 4).tolist() == [-1, 0, -1, -1]
    assert evaluate("n / 2", env, 4).dtype == np.float64
    assert evaluate("n ** -1", env, 4).dtype == np.float64  # no integer-power error
    assert evaluate("n % 0", env, 4).tolist() == [0, 0, 0, 0]
    assert evaluate("sqrt(ok)", env, 4).dtype == np.float64  # never float16
    assert evaluate("n + 10000000000", env, 4).dtype == np.int64  # no overflow error
    assert evaluate("abs(ok)", env, 4).tolist() == [1, 0, 1, 1]
    assert evaluate("0 < n <= 2", env, 4).tolist() == [False, False, True, True]
    assert evaluate("not ok or n > 2", env, 4).tolist() == [False, True, False, False]
    assert evaluate("minimum(a, n)", env, 4).tolist() == [0.0, -2.0, 0.0, 2.0]
    assert evaluate("arctan2(a, 1)", env, 4).dtype == np.float64


def test_selection_helper(env: dict) -> None:
    assert evaluate_selection("n >= 1 and a > 0", env, 4).tolist() == [False, False, False, True]
    with pytest.raises(SchemaError, match=r"not a condition.*'nJet > 0'"):
        evaluate_selection("n", env, 4)
    with pytest.raises(SchemaError, match=r"per object.*any\("):
        evaluate_selection("Jet_pt > 1", env, 4)


def test_unknown_name_at_evaluation(env: dict) -> None:
    with pytest.raises(SchemaError, match=r"unknown field 'Jet_ptt'.*did you mean 'Jet_pt'"):
        evaluate("Jet_ptt + 1", env, 4)


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("__import__('os').system('true')", "'os'"),
        ("Jet_pt.__class__()", "Jet_pt.__class__()"),
        ("lambda: 1", "lambda"),
        ("a if b else c", "if ... else"),
        ("(nJet >= 2) & (MET_pt > 10)", "&"),
        ("~passTrigger", "~"),
        ("a // 2", "//"),
        ("a is None", "is"),
        ("[x for x in y]", "comprehension"),
        ("'text'", "'text'"),
        ("1j", "1j"),
        ("sum(Jet_pt, axis=1)", "axis="),
        ("f(x)", "f"),
        ("np.log(x)", "np.log()"),
        ("Jet_pt.sum()", "Jet_pt.sum()"),
        ("Jet_pt[0]", "[0]"),
        ("Jet_pt[:, n]", "[:, n]"),
        ("Jet_pt[:, ::2]", "[:, ::2]"),
        ("a, b", "a, b"),
        ("99999999999999999999", "99999999999999999999"),
        ("first(Jet_pt)", "first"),
        ("(a + b).x", "(a + b).x"),
    ],
)
def test_rejected_tokens_are_named(text: str, token: str) -> None:
    with pytest.raises(SchemaError) as info:
        parse(text)
    assert token in str(info.value)


def test_suggestions_for_rejected_tokens() -> None:
    with pytest.raises(SchemaError, match="use 'and'"):
        parse("a & b")
    with pytest.raises(SchemaError, match=r"unknown function 'summ'.*did you mean 'sum'"):
        parse("summ(Jet_pt)")
    with pytest.raises(SchemaError, match=r"x\[:, 0\]"):
        parse("first(Jet_pt)")
    with pytest.raises(SchemaError, match=r"write sum\(Jet_pt\)"):
        parse("Jet_pt.sum()")
    with pytest.raises(SchemaError, match=r"takes 2 arguments, got 1"):
        parse("arctan2(a)")
    with pytest.raises(SchemaError, match=r"invalid expression 'a \+'"):
        parse("a +")
    with pytest.raises(SchemaError, match="empty expression"):
        parse("   ")


@pytest.mark.parametrize(
    "text",
    [
        "-" * 3000 + "x",
        "(" * 300 + "x" + ")" * 300,
        "not " * 900 + "x",
        "a+" * 1500 + "a",
        "x" + "[:, :1]" * 300,
        "f(" * 150 + "x" + ")" * 150,
        "x" * (MAX_LENGTH + 1),
        "a\0b",
    ],
    ids=["unary", "parens", "not", "sum-chain", "subscripts", "calls", "long", "nul"],
)
def test_pathological_inputs_are_schema_errors(text: str) -> None:
    with pytest.raises(SchemaError):
        parse(text)


def test_depth_limit_allows_reasonable_nesting() -> None:
    parse("a" + " + a" * (MAX_DEPTH - 2))
    with pytest.raises(SchemaError, match="nested more than"):
        parse("a" + " + a" * (MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "text", ["10**10**10", "9**9**9**9", "(10**308)**(10**308)", "2**-1074 / 0"]
)
def test_huge_constants_fold_in_bounded_time(text: str) -> None:
    out = evaluate(text, {}, 3)
    assert out.shape == (3,) and out.dtype == np.float64


def test_huge_exponents_on_arrays(env: dict) -> None:
    out = evaluate("n ** 10 ** 10", env, 4)
    assert out[0] == 0.0 and np.isinf(out[1])


def test_functions_table_is_the_documented_grammar() -> None:
    for name in (
        "abs",
        "log",
        "exp",
        "sqrt",
        "sin",
        "cos",
        "tan",
        "arctan2",
        "minimum",
        "maximum",
        "where",
        "sum",
        "count",
        "min",
        "max",
        "mean",
        "any",
        "all",
    ):
        assert name in FUNCTIONS


# -- property tests -----------------------------------------------------------------------

QUARTERS = [k / 4 for k in range(-16, 17)]


class Case:
    """Random data: per-event a (float64), b (int64), c (bool); collection J (J_x float,
    J_n int, J_b bool) and collection K (K_y float) with other counts."""

    def __init__(self, draw: st.DrawFn) -> None:
        n = draw(st.integers(0, 6))
        fl = st.sampled_from(QUARTERS)
        cj = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
        ck = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
        tj, tk = sum(cj), sum(ck)
        self.n = n
        cols = {
            "a": np.array(draw(st.lists(fl, min_size=n, max_size=n)), dtype=np.float64),
            "b": np.array(
                draw(st.lists(st.integers(-5, 5), min_size=n, max_size=n)), dtype=np.int64
            ),
            "c": np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool),
        }
        jcols = {
            "J_x": np.array(draw(st.lists(fl, min_size=tj, max_size=tj)), dtype=np.float64),
            "J_n": np.array(
                draw(st.lists(st.integers(-5, 5), min_size=tj, max_size=tj)), dtype=np.int64
            ),
            "J_b": np.array(draw(st.lists(st.booleans(), min_size=tj, max_size=tj)), dtype=bool),
        }
        kcols = {"K_y": np.array(draw(st.lists(fl, min_size=tk, max_size=tk)), dtype=np.float64)}
        oj = np.concatenate([[0], np.cumsum(cj)]).astype(np.int64)
        ok = np.concatenate([[0], np.cumsum(ck)]).astype(np.int64)
        self.env: dict[str, object] = dict(cols)
        self.ak: dict[str, object] = {k: ak.Array(v) for k, v in cols.items()}
        for cnt, offs, group in ((cj, oj, jcols), (ck, ok, kcols)):
            for k, v in group.items():
                # separate offsets arrays per field, as a source read gives them
                self.env[k] = Jagged(offs.copy(), v)
                self.ak[k] = ak.unflatten(v, np.asarray(cnt, dtype=np.int64))


# the reference: awkward broadcasting and reducers with the documented type rules


def _int_bool(x: object) -> object:
    if isinstance(x, (bool, np.bool_)):
        return int(x)
    if isinstance(x, ak.Array) and str(ak.type(x)).endswith("bool"):
        return ak.values_astype(x, np.int64)
    return x


def _f64(x: object) -> object:
    if isinstance(x, ak.Array):
        return ak.values_astype(x, np.float64)
    return float(x)  # type: ignore[arg-type]


_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "%": np.mod}
_FLOAT2 = {"/": np.true_divide, "**": np.power}
_CMP = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}
_F1 = {
    "sqrt": np.sqrt,
    "log": np.log,
    "exp": np.exp,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "floor": np.floor,
}


def _reduce(op: str, x: ak.Array) -> ak.Array:
    if op == "count":
        return ak.num(x, axis=1)
    if op == "sum":
        return ak.sum(_int_bool(x), axis=1)
    if op in ("any", "all"):
        return getattr(ak, op)(x != 0, axis=1)
    if op == "mean":
        return ak.fill_none(ak.mean(_f64(x), axis=1), np.nan)
    # NaN propagates, as in numpy (awkward's reducers skip NaN)
    has_nan = ak.fill_none(ak.any(np.isnan(_f64(x)), axis=1), False)
    return ak.where(has_nan, np.nan, ak.fill_none(_f64(getattr(ak, op)(x, axis=1)), np.nan))


@st.composite
def expressions(draw: st.DrawFn, shape: str, depth: int) -> tuple[str, object]:
    """(text, reference function of the awkward env) of one value of ``shape``:
    ``E`` one value per event, ``J`` one value per object of collection J."""
    leaves_e = ["a", "b", "c", "const"]
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        if shape == "J":
            name = draw(st.sampled_from(["J_x", "J_n", "J_b"]))
            return name, lambda e, name=name: e[name]
        name = draw(st.sampled_from(leaves_e))
        if name == "const":
            v = draw(st.one_of(st.integers(-3, 3), st.sampled_from(QUARTERS), st.booleans()))
            text = repr(v)
            if v in (True, False) and isinstance(v, bool):
                return text, lambda e, v=v: v
            return f"({text})", lambda e, v=v: v
        return name, lambda e, name=name: e[name]

    sub = lambda s: expressions(s, depth - 1)  # noqa: E731
    # a J-shaped combination needs one J operand; the other may be per-event
    other = "E" if shape == "E" else draw(st.sampled_from(["E", "J"]))
    kind = draw(
        st.sampled_from(
            ["arith", "float2", "cmp", "logic", "not", "neg", "f1", "abs", "minmax", "where"]
            + (["reduce", "reduce", "index", "slice", "kreduce"] if shape == "E" else [])
        )
    )
    if kind in ("arith", "float2", "cmp", "logic", "minmax"):
        (ta, fa), (tb, fb) = draw(sub(shape)), draw(sub(other))
        if draw(st.booleans()):
            (ta, fa), (tb, fb) = (tb, fb), (ta, fa)
        if kind == "arith":
            op = draw(st.sampled_from(list(_ARITH)))
            return f"({ta} {op} {tb})", lambda e: _ARITH[op](_int_bool(fa(e)), _int_bool(fb(e)))
        if kind == "float2":
            op = draw(st.sampled_from(list(_FLOAT2)))
            return f"({ta} {op} {tb})", lambda e: _FLOAT2[op](_f64(fa(e)), _f64(fb(e)))
        if kind == "cmp":
            op = draw(st.sampled_from(list(_CMP)))
            return f"({ta} {op} {tb})", lambda e: _CMP[op](fa(e), fb(e))
        if kind == "logic":
            op = draw(st.sampled_from(["and", "or"]))
            fn = np.logical_and if op == "and" else np.logical_or
            return f"({ta} {op} {tb})", lambda e: fn(fa(e), fb(e))
        op = draw(st.sampled_from(["minimum", "maximum"]))
        fn2 = getattr(np, op)
        return f"{op}({ta}, {tb})", lambda e: fn2(_int_bool(fa(e)), _int_bool(fb(e)))
    if kind in ("not", "neg", "f1", "abs"):
        ta, fa = draw(sub(shape))
        if kind == "not":
            return f"(not {ta})", lambda e: np.logical_not(fa(e))
        if kind == "neg":
            return f"(-{ta})", lambda e: np.negative(_int_bool(fa(e)))
        if kind == "abs":
            return f"abs({ta})", lambda e: np.abs(_int_bool(fa(e)))
        name = draw(st.sampled_from(list(_F1)))
        return f"{name}({ta})", lambda e: _F1[name](_f64(fa(e)))
    if kind == "where":
        tc, fc = draw(sub(shape))
        (ta, fa), (tb, fb) = draw(sub(other)), draw(sub("E"))
        return (
            f"where({tc}, {ta}, {tb})",
            lambda e: _where(_as_bool(fc(e)), _int_bool(fa(e)), _int_bool(fb(e))),
        )
    op = draw(st.sampled_from(["sum", "count", "min", "max", "mean", "any", "all"]))
    if kind == "kreduce":
        return f"{op}(K_y)", lambda e: _reduce(op, e["K_y"])
    ta, fa = draw(sub("J"))
    if kind == "reduce":
        return f"{op}({ta})", lambda e: _reduce(op, fa(e))
    k = draw(st.integers(0, 3))
    if kind == "index":
        return (
            f"({ta})[:, {k}]",
            lambda e: ak.fill_none(_f64(ak.pad_none(fa(e), k + 1, axis=1)[:, k]), np.nan),
        )
    return f"{op}(({ta})[:, :{k}])", lambda e: _reduce(op, fa(e)[:, :k])


def _as_bool(x: object) -> object:
    if isinstance(x, ak.Array):
        return ak.values_astype(x, bool)
    return bool(x)


def _where(c: object, a: object, b: object) -> object:
    if not any(isinstance(v, ak.Array) for v in (c, a, b)):
        return np.where(c, a, b).item()
    c, a, b = ak.broadcast_arrays(c, a, b)
    return ak.where(c, a, b)


def _compare(got: object, ref: object, n: int, shape: str) -> None:
    if shape == "J":
        assert isinstance(got, Jagged)
        ref_arr = ak.Array(ref)
        assert got.counts.tolist() == ak.num(ref_arr, axis=1).tolist()
        want = np.asarray(ak.to_numpy(ak.flatten(ref_arr)), dtype=np.float64)
        have = got.content.astype(np.float64)
    else:
        assert isinstance(got, np.ndarray) and got.shape == (n,)
        want = (
            np.asarray(ak.to_numpy(ref), dtype=np.float64)
            if isinstance(ref, ak.Array)
            else np.full(n, ref, dtype=np.float64)
        )
        have = got.astype(np.float64)
    np.testing.assert_allclose(have, want, rtol=1e-9, atol=1e-12, equal_nan=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_expressions_match_awkward(data: st.DataObject) -> None:
    case = Case(data.draw)
    shape = data.draw(st.sampled_from(["E", "J"]))
    text, ref = data.draw(expressions(shape, 3))
    expr = parse(text)
    got = evaluate(expr, case.env, case.n)
    with np.errstate(all="ignore"):
        want = ref(case.ak)
    _compare(got, want, case.n, shape)
    # static shape inference agrees with the evaluation
    assert is_jagged_result(expr, {"J_x", "J_n", "J_b", "K_y"}) == (shape == "J")
    # the dtype does not depend on the data (validation learns it from two dummy events)
    dummy = {
        k: (
            Jagged(np.array([0, 2, 2]), np.ones(2, v.dtype))
            if isinstance(v, Jagged)
            else np.ones(2, v.dtype)
        )
        for k, v in case.env.items()
    }
    assert evaluate(expr, dummy, 2).dtype == got.dtype


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_combining_collections_is_always_refused(data: st.DataObject) -> None:
    text_j, _ = data.draw(expressions("J", 1))
    op = data.draw(st.sampled_from(["+", "<", "and"]))
    text = f"({text_j}) {op} K_y"
    colls = {"J_x": "J", "J_n": "J", "J_b": "J", "K_y": "K"}
    with pytest.raises(SchemaError, match="different numbers of objects"):
        infer_collection(parse(text), colls)


_NAMES_ENV = {
    "x": np.array([1.0, 0.0, -1.0]),
    "i": np.array([1, 0, 2], dtype=np.int32),
    "Jet_pt": Jagged(np.array([0, 2, 2, 3]), np.array([1.0, 2.0, 3.0], dtype=np.float32)),
    "Mu_pt": Jagged(np.array([0, 0, 1, 1]), np.array([4.0], dtype=np.float32)),
    "PV.x": np.array([0.5, 0.5, 0.5], dtype=np.float32),
}
_TOKENS = [
    "x",
    "i",
    "Jet_pt",
    "Mu_pt",
    "PV",
    ".",
    "x",
    "(",
    ")",
    "[",
    "]",
    ":",
    ",",
    "+",
    "-",
    "*",
    "**",
    "/",
    "%",
    "<",
    "<=",
    "==",
    "!=",
    "and",
    "or",
    "not",
    "sum",
    "log",
    "where",
    "min",
    "count",
    "arctan2",
    "1",
    "0",
    "-1",
    "2.5",
    "1e308",
    "10",
    "True",
    "None",
    "'s'",
    " ",
    "lambda",
    "if",
    "else",
    "&",
    "~",
    "@",
    "\\",
    "#",
    "\n",
    "__class__",
    "import",
    "=",
]


def _must_only_raise_schema_error(text: str) -> None:
    try:
        expr = parse(text)
    except SchemaError:
        return
    try:
        out = evaluate(expr, _NAMES_ENV, 3)
    except SchemaError:
        return
    assert isinstance(out, (np.ndarray, Jagged)) and len(out) == 3


@settings(max_examples=300, deadline=2000)
@given(st.text(max_size=80))
def test_random_text_only_raises_schema_error(text: str) -> None:
    _must_only_raise_schema_error(text)


@settings(max_examples=300, deadline=2000)
@given(st.lists(st.sampled_from(_TOKENS), max_size=30).map(" ".join))
def test_token_soup_only_raises_schema_error(text: str) -> None:
    _must_only_raise_schema_error(text)


@settings(max_examples=100, deadline=2000)
@given(st.lists(st.sampled_from(_TOKENS), max_size=40).map("".join))
def test_glued_token_soup_only_raises_schema_error(text: str) -> None:
    _must_only_raise_schema_error(text)


@settings(max_examples=50, deadline=2000)
@given(st.text(alphabet=string.digits + "*-+()", max_size=60))
def test_arithmetic_on_constants_is_bounded(text: str) -> None:
    _must_only_raise_schema_error(text)


@settings(max_examples=100, deadline=None)
@given(
    lists=st.lists(st.lists(st.integers(-9, 9), max_size=5), max_size=6),
    start=st.one_of(st.none(), st.integers(-6, 6)),
    stop=st.one_of(st.none(), st.integers(-6, 6)),
    index=st.integers(-6, 5),
)
def test_object_slices_match_python(
    lists: list[list[int]], start: int | None, stop: int | None, index: int
) -> None:
    env = {"x": jagged(lists, "int64")}  # type: ignore[arg-type]
    a = "" if start is None else str(start)
    b = "" if stop is None else str(stop)
    out = evaluate(f"x[:, {a}:{b}]", env, len(lists))
    assert isinstance(out, Jagged)
    want = [x[start:stop] for x in lists]
    assert out.counts.tolist() == [len(w) for w in want]
    assert out.content.tolist() == [v for w in want for v in w]
    picked = evaluate(f"x[:, {index}]", env, len(lists))
    want_i = [x[index] if -len(x) <= index < len(x) else np.nan for x in lists]
    assert np.array_equal(picked, np.array(want_i, dtype=np.float64), equal_nan=True)
