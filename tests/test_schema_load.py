"""Schemas: YAML loading, structural checks, validation against fields, fingerprints."""

from __future__ import annotations

import contextlib
import copy
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rntensor.errors import SchemaError
from rntensor.schema import (
    LabelSpec,
    OutputSpec,
    ResolvedSchema,
    Schema,
    load_schema,
    validate,
)
from rntensor.sources import FieldInfo, Jagged

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def _fields(*specs: tuple[str, str, str | None]) -> dict[str, FieldInfo]:
    return {p: FieldInfo(p, dt, coll is not None, coll) for p, dt, coll in specs}


# the NanoAOD-like test data (rntensor.datagen), as a TTree and as an RNTuple with records
_EVENT = [
    ("run", "int64", None),
    ("luminosityBlock", "int64", None),
    ("event", "int64", None),
    ("MET_pt", "float32", None),
    ("MET_phi", "float32", None),
    ("weight", "float32", None),
    ("label", "int32", None),
    ("passTrigger", "bool", None),
    ("nJet", "int32", None),
    ("nMuon", "int32", None),
]
_OBJECTS = [
    *((f"Jet_{v}", "float32", "Jet") for v in ("pt", "eta", "phi", "mass", "btag")),
    ("Muon_pt", "float32", "Muon"),
    ("Muon_eta", "float32", "Muon"),
    ("Muon_charge", "int32", "Muon"),
]
NANO = _fields(*_EVENT, *_OBJECTS)
RECORDS = _fields(
    *_EVENT,
    *_OBJECTS,
    ("PV.x", "float32", None),
    ("PV.y", "float32", None),
    ("PV.z", "float32", None),
    ("PV.npvs", "int32", None),
    ("Track.pt", "float32", "Track"),
    ("Track.eta", "float32", "Track"),
    ("Track.phi", "float32", "Track"),
)
WITH_STRING = {
    **NANO,
    "HLT_names": FieldInfo("HLT_names", "object", False, None, False, "std::string"),
}

JET_TAGGING = {
    "name": "jet-tagging",
    "tree": "Events",
    "selection": "nJet >= 2 and MET_pt > 10",
    "define": {
        "Jet_logpt": "log(Jet_pt)",
        "Jet_px": "Jet_pt * cos(Jet_phi)",
        "ht": "sum(Jet_pt)",
    },
    "outputs": {
        "jets": {
            "fields": ["Jet_logpt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btag"],
            "length": 10,
            "pad_value": 0,
            "sort_by": "-Jet_pt",
            "normalize": "standard",
        },
        "muons": {"fields": ["Muon_pt", "Muon_eta", "Muon_charge"], "ragged": True},
        "scalars": {"fields": ["MET_pt", "MET_phi", "ht"]},
    },
    "labels": {"target": {"field": "label", "classes": 2}},
    "weights": "weight",
    "keep": ["run", "event"],
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted-path keys changed (``None`` value deletes)."""
    out = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return out


def minimal(**outputs: Any) -> dict[str, Any]:
    return {"name": "t", "outputs": outputs}


# -- shipped schemas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "fields"),
    [("jet-tagging.yaml", NANO), ("flat-tabular.yaml", NANO), ("rntuple-records.yaml", RECORDS)],
)
def test_shipped_schemas_load_and_validate(file: str, fields: dict[str, FieldInfo]) -> None:
    schema = load_schema(SCHEMAS / file)
    resolved = validate(schema, fields)
    assert isinstance(resolved, ResolvedSchema)
    assert set(resolved.input_fields) <= set(fields)
    assert load_schema(schema.to_yaml()).fingerprint() == schema.fingerprint()


def test_every_shipped_schema_is_tested() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.yaml")) == [
        "flat-tabular.yaml",
        "jet-tagging.yaml",
        "rntuple-records.yaml",
    ]


def test_jet_tagging_file_is_the_issue_example() -> None:
    assert load_schema(SCHEMAS / "jet-tagging.yaml") == load_schema(JET_TAGGING)


def test_resolved_jet_tagging() -> None:
    r = validate(SCHEMAS / "jet-tagging.yaml", NANO)
    assert r.input_fields == (
        "Jet_btag",
        "Jet_eta",
        "Jet_mass",
        "Jet_phi",
        "Jet_pt",
        "MET_phi",
        "MET_pt",
        "Muon_charge",
        "Muon_eta",
        "Muon_pt",
        "event",
        "label",
        "nJet",
        "run",
        "weight",
    )
    assert r.defines_order == ("Jet_logpt", "ht")  # Jet_px is not used
    assert set(r.defines) == {"Jet_logpt", "ht"}
    assert r.selection is not None and r.selection.names == {"nJet", "MET_pt"}
    jets, muons, scalars = r.outputs
    assert (jets.kind, jets.collection, jets.length) == ("padded", "Jet", 10)
    assert jets.sort_by is not None and jets.sort_by.text == "-Jet_pt"
    assert jets.normalize == "standard"
    assert (muons.kind, muons.collection) == ("ragged", "Muon")
    assert muons.field_dtypes == ("float32", "float32", "int32")
    assert (scalars.kind, scalars.collection) == ("flat", None)
    assert r.sort_keys == {"jets": jets.sort_by}
    assert r.labels[0].dtype == "int64" and r.labels[0].field_dtype == "int32"
    assert r.field_dtype("ht") == "float32" and r.field_dtype("run") == "int64"
    assert r.collections["Jet_logpt"] == "Jet" and r.collections["ht"] is None
    assert (r.weights, r.keep) == ("weight", ("run", "event"))


def test_resolved_schema_pickles_and_is_pure() -> None:
    a = validate(JET_TAGGING, NANO)
    b = pickle.loads(pickle.dumps(a))
    assert b.defines_order == a.defines_order and b.outputs == a.outputs
    assert validate(JET_TAGGING, NANO).outputs == a.outputs


def test_defines_in_any_order_and_selection_defines() -> None:
    schema = {
        "name": "t",
        "selection": "hard and nJet > 0",
        "define": {
            "hard": "lead > 50",
            "lead": "Jet_pt[:, 0]",
            "x2": "Jet_px * 2",
            "Jet_px": "Jet_pt * cos(Jet_phi)",
        },
        "outputs": {"o": {"fields": ["x2", "Jet_eta"], "length": 4}},
    }
    r = validate(schema, NANO)
    assert r.defines_order == ("lead", "hard", "Jet_px", "x2")
    assert r.selection_defines == ("lead", "hard")
    assert r.dtypes["lead"] == "float32" and r.dtypes["hard"] == "bool"
    n = 3
    cols = {
        "Jet_pt": Jagged(np.array([0, 2, 2, 3]), np.array([60.0, 10.0, 5.0], np.float32)),
        "Jet_phi": Jagged(np.array([0, 2, 2, 3]), np.zeros(3, np.float32)),
        "Jet_eta": Jagged(np.array([0, 2, 2, 3]), np.zeros(3, np.float32)),
        "nJet": np.array([2, 0, 1], np.int32),
    }
    env = r.evaluate_defines(cols, n)
    assert env["hard"].tolist() == [True, False, False]
    assert env["x2"].content.tolist() == [120.0, 20.0, 10.0]


# -- fingerprints -------------------------------------------------------------------------


def _shuffled(x: Any, rng: random.Random) -> Any:
    if isinstance(x, dict):
        items = list(x.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    return x


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32))
def test_fingerprint_ignores_key_order(seed: int) -> None:
    a = load_schema(JET_TAGGING)
    b = load_schema(_shuffled(JET_TAGGING, random.Random(seed)))
    assert a.fingerprint() == b.fingerprint()


def test_fingerprint_is_the_same_for_every_form(tmp_path: Path) -> None:
    text = (SCHEMAS / "jet-tagging.yaml").read_text()
    path = tmp_path / "s.yaml"
    path.write_text("# a comment\n" + text.replace("\n", "  # more\n", 3))
    forms = [
        JET_TAGGING,
        text,
        path,
        str(path),
        load_schema(JET_TAGGING),
        yaml.safe_dump(JET_TAGGING, sort_keys=True),
    ]
    assert len({load_schema(f).fingerprint() for f in forms}) == 1


def test_fingerprint_normalizes_equivalent_spellings() -> None:
    a = with_(
        JET_TAGGING,
        outputs__jets__normalize=True,
        outputs__jets__pad_value=0.0,
        outputs__scalars__dtype="f4",
    )
    assert load_schema(a).fingerprint() == load_schema(JET_TAGGING).fingerprint()
    b = with_(JET_TAGGING, outputs__jets__length=11)
    assert load_schema(b).fingerprint() != load_schema(JET_TAGGING).fingerprint()


def test_dataclass_schema_goes_through_the_same_checks() -> None:
    s = Schema("t", (OutputSpec("o", ("a", "b"), length=0),))
    with pytest.raises(SchemaError, match="'length' of output 'o' must be an integer >= 1"):
        load_schema(s)
    ok = Schema("t", (OutputSpec("o", ["MET_pt"]),), labels=(LabelSpec("y", "weight"),))
    assert load_schema(ok) == ok
    assert ok.labels[0].dtype == "float32"  # regression target by default


def test_to_yaml_quotes_what_yaml_would_misread() -> None:
    s = load_schema(
        {
            "name": "t",
            "selection": "not (MET_pt > 1) or nJet == -1",
            "define": {
                "lead": "Jet_pt[:, 0]",
                "mid": "Jet_pt[:, 1:-1]",
                "five": 5,
                "neg": "-MET_pt",
            },
            "outputs": {"o": {"fields": ["lead", "five"], "pad_value": -1.5, "dtype": "float16"}},
            "labels": {"r": {"field": "MET_pt", "dtype": "int64"}},
        }
    )
    text = s.to_yaml()
    assert load_schema(text) == s
    assert s.define["five"] == "5"
    validate(text, NANO)


def test_to_yaml_round_trips_and_has_header() -> None:
    s = load_schema(
        with_(JET_TAGGING, outputs__jets__pad_value=float("nan"), labels__reg={"field": "weight"})
    )
    text = s.to_yaml(header="made by a test\nsecond line")
    assert text.startswith("# made by a test\n# second line\n")
    assert "fields: [Jet_logpt, Jet_eta, Jet_phi, Jet_mass, Jet_btag]" in text
    again = load_schema(text)
    assert again.fingerprint() == s.fingerprint()
    assert np.isnan(again.output("jets").pad_value)


# -- structural checks (load_schema), one per message --------------------------------------


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        (
            with_(JET_TAGGING, outputs=None, ouputs=JET_TAGGING["outputs"]),
            r"unknown key 'ouputs' in the schema; did you mean 'outputs'\?",
        ),
        (
            with_(JET_TAGGING, outputs__jets__length=None, outputs__jets__lenght=10),
            r"unknown key 'lenght' in output 'jets'; did you mean 'length'\?",
        ),
        (
            with_(JET_TAGGING, labels__target__clases=2),
            r"unknown key 'clases' in label 'target'; did you mean 'classes'\?",
        ),
        (
            with_(JET_TAGGING, outputs__jets__length=0),
            r"'length' of output 'jets' must be an integer >= 1, got 0",
        ),
        (
            with_(JET_TAGGING, outputs__jets__length="10"),
            r"'length' of output 'jets' must be an integer >= 1, got '10'",
        ),
        (
            with_(JET_TAGGING, outputs__muons__length=5),
            r"output 'muons' sets both 'length' \(5\) and 'ragged: true'.*drop one",
        ),
        (
            with_(JET_TAGGING, outputs__muons__ragged="yes"),
            r"'ragged' of output 'muons' must be true or false",
        ),
        (
            with_(JET_TAGGING, outputs__jets__normalize="stdandard"),
            r"'normalize' of output 'jets' must be 'standard' or 'none'.*did you mean 'standard'",
        ),
        (
            with_(JET_TAGGING, outputs__jets__dtype="flaot32"),
            r"'dtype' of output 'jets' must be a numpy dtype name.*did you mean 'float32'",
        ),
        (with_(JET_TAGGING, outputs__jets__dtype="object"), r"'dtype' of output 'jets'"),
        (
            with_(JET_TAGGING, outputs__jets__pad_value="zero"),
            r"'pad_value' of output 'jets' must be a number",
        ),
        (
            with_(JET_TAGGING, outputs__scalars__sort_by="-MET_pt"),
            r"output 'scalars' is flat.*'sort_by'.*add 'length' or 'ragged: true'",
        ),
        (
            with_(JET_TAGGING, outputs__jets__sort_by="-Jet_pt +"),
            r"'sort_by' of output 'jets': invalid expression",
        ),
        (
            with_(JET_TAGGING, labels__target__classes=1),
            r"'classes' of label 'target' must be an integer >= 2, got 1",
        ),
        (
            with_(JET_TAGGING, labels__target__dtype="float32"),
            r"label 'target' has 2 classes but dtype float32.*integer dtype",
        ),
        (with_(JET_TAGGING, labels__target__field=None), r"'field' of label 'target'"),
        (
            with_(JET_TAGGING, outputs__jets_mask={"fields": ["MET_pt"]}),
            r"output 'jets_mask' and the mask 'jets_mask' of output 'jets'.*rename one",
        ),
        (
            with_(JET_TAGGING, labels__muons_offsets="label"),
            r"label 'muons_offsets' and the offsets 'muons_offsets' of output 'muons'",
        ),
        (
            with_(JET_TAGGING, labels__scalars="label"),
            r"label 'scalars' and output 'scalars' would both be called 'scalars'",
        ),
        (
            with_(JET_TAGGING, keep=["run", "weight"]),
            r"kept field 'weight' and the weights column 'weight'",
        ),
        (with_(JET_TAGGING, outputs___entry={"fields": ["run"]}), r"output name '_entry'"),
        (with_(JET_TAGGING, keep=["_entry"]), r"'_entry'"),
        (
            with_(JET_TAGGING, define__a="b + 1", define__b="c * 2", define__c="a"),
            r"cycle: a -> b -> c -> a",
        ),
        (with_(JET_TAGGING, define__a="a + 1"), r"cycle: a -> a"),
        (with_(JET_TAGGING, define__ht="sum(Jet_pt"), r"define 'ht': invalid expression"),
        (with_(JET_TAGGING, define={"2x": "1"}), r"define name '2x' must be an identifier"),
        (
            with_(JET_TAGGING, selection="nJet >= 2 & MET_pt > 10"),
            r"'selection': '&' is not allowed.*use 'and'",
        ),
        (with_(JET_TAGGING, outputs__jets__fields=[]), r"'fields' of output 'jets' is empty"),
        (
            with_(JET_TAGGING, outputs__jets__fields=["Jet_eta", "Jet_eta"]),
            r"'fields' of output 'jets' lists 'Jet_eta' more than once",
        ),
        (with_(JET_TAGGING, outputs__jets__fields=None), r"output 'jets' has no 'fields'"),
        (with_(JET_TAGGING, outputs={}), r"the schema needs 'outputs'"),
        (with_(JET_TAGGING, name=None), r"'name' of the schema must be a non-empty string"),
        (with_(JET_TAGGING, keep="run"), None),  # a single name is a list of one
        (with_(JET_TAGGING, labels__target="label"), None),  # shorthand: the field
    ],
)
def test_structural_messages(schema: dict[str, Any], match: str | None) -> None:
    if match is None:
        load_schema(schema)
        return
    with pytest.raises(SchemaError, match=match):
        load_schema(schema)


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"invalid YAML in schema text at line 4"):
        load_schema("name: x\noutputs:\n  a: [b\n  c: d\n")
    with pytest.raises(SchemaError, match=r"key 'length' appears twice.*line 5"):
        load_schema("name: x\noutputs:\n  a:\n    length: 3\n    length: 4\n")
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\noutputs:\n  a: {fields: [MET_pt], lenght: 3}\n")
    with pytest.raises(SchemaError, match=r"did you mean 'length'.*in schema file .*bad.yaml"):
        load_schema(path)
    with pytest.raises(SchemaError, match=r"schema file not found: .*nope.yaml"):
        load_schema(tmp_path / "nope.yaml")
    with pytest.raises(SchemaError, match=r"must be a mapping.*no file named 'nope'"):
        load_schema("nope")


def test_yaml_alias_bomb_is_bounded() -> None:
    lists = ["&a [x, x, x, x, x, x, x, x, x]"]
    for i, prev in zip("bcdefghi", "abcdefgh", strict=True):
        lists.append(f"&{i} [" + ", ".join([f"*{prev}"] * 9) + "]")
    bomb = "name: t\noutputs: {o: {fields: [MET_pt]}}\nkeep: [" + ", ".join(lists) + "]\n"
    with pytest.raises(SchemaError, match=r"each entry of 'keep' must be a non-empty string"):
        load_schema(bomb)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.floats(allow_nan=True)
    | st.sampled_from(["", "x", "Jet_pt", "-Jet_pt", "standard", "float32", "log(", "a b"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "fields",
                    "length",
                    "ragged",
                    "field",
                    "classes",
                    "dtype",
                    "sort_by",
                    "normalize",
                    "pad_value",
                    "o",
                    "a",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
schema_like = st.dictionaries(
    st.sampled_from(
        ["name", "tree", "selection", "define", "outputs", "labels", "weights", "keep", "ouputs"]
    ),
    json_values,
    max_size=8,
)


@settings(max_examples=100, deadline=2000)
@given(schema_like)
def test_random_dicts_only_raise_schema_error(data: dict[str, Any]) -> None:
    try:
        schema = load_schema(data)
    except SchemaError:
        return
    with contextlib.suppress(SchemaError):
        validate(schema, NANO)


@settings(max_examples=150, deadline=2000)
@given(st.text(alphabet="abn:{}[]-,&*!#'\"\n |>x1.", max_size=80))
def test_random_yaml_text_only_raises_schema_error(text: str) -> None:
    with contextlib.suppress(SchemaError):
        load_schema(text + "\n")


# -- validation against fields, one per message --------------------------------------------


@pytest.mark.parametrize(
    ("schema", "fields", "match"),
    [
        (
            with_(JET_TAGGING, outputs__jets__fields=["Jet_ptt", "Jet_eta"]),
            NANO,
            r"unknown field 'Jet_ptt' in output 'jets'; did you mean 'Jet_pt'",
        ),
        (
            with_(JET_TAGGING, define__ht="sum(Jet_pT)"),
            NANO,
            r"unknown field 'Jet_pT' in define 'ht'; did you mean 'Jet_pt'",
        ),
        (
            with_(JET_TAGGING, selection="nJets >= 2"),
            NANO,
            r"unknown field 'nJets' in the selection; did you mean 'nJet'",
        ),
        (
            with_(JET_TAGGING, weights="wieght"),
            NANO,
            r"unknown field 'wieght' in 'weights'; did you mean 'weight'",
        ),
        (
            with_(JET_TAGGING, outputs__scalars__fields=["MET_pt / 2"]),
            NANO,
            r"unknown field 'MET_pt / 2' in output 'scalars'; only names go here: write the expression in 'define'",
        ),
        (
            with_(JET_TAGGING, define__unused="log(nothing_here)"),
            NANO,
            r"unknown field 'nothing_here' in define 'unused'",
        ),
        (
            with_(JET_TAGGING, outputs__scalars__fields=["MET_pt", "HLT_names"]),
            WITH_STRING,
            r"field 'HLT_names' in output 'scalars' has type 'std::string'.*remove it",
        ),
        (
            with_(JET_TAGGING, outputs__scalars__fields=["MET_pt", "Jet_pt"]),
            NANO,
            r"output 'scalars': field 'Jet_pt' is jagged \(one value per jet\) but a flat output "
            r"needs one value per event; reduce it \(sum\(Jet_pt\), Jet_pt\[:, 0\]\) or move it "
            r"to a padded/ragged output",
        ),
        (
            with_(JET_TAGGING, outputs__jets__fields=["Jet_pt", "Muon_pt"]),
            NANO,
            r"output 'jets' mixes collections Jet \(Jet_pt\) and Muon \(Muon_pt\).*move Muon_pt",
        ),
        (
            with_(JET_TAGGING, outputs__jets__fields=["MET_pt", "ht"], outputs__jets__sort_by=None),
            NANO,
            r"output 'jets' is padded but all its fields \(MET_pt, ht\) are one value per "
            r"event.*such as Jet_btag.*drop 'length'",
        ),
        (
            with_(JET_TAGGING, outputs__muons__fields=["MET_pt"]),
            NANO,
            r"output 'muons' is ragged but all its fields.*drop 'ragged'",
        ),
        (
            with_(JET_TAGGING, selection="Jet_pt > 30"),
            NANO,
            r"selection 'Jet_pt > 30' gives one value per jet, not one per event; .*any\(Jet_pt > 30\)",
        ),
        (
            with_(JET_TAGGING, selection="nJet"),
            NANO,
            r"selection 'nJet' gives int32 values, not a condition.*'nJet > 0'",
        ),
        (
            with_(JET_TAGGING, labels__target__field="Jet_btag"),
            NANO,
            r"label 'target': 'Jet_btag' is jagged \(one value per jet\).*sum\(Jet_btag\)",
        ),
        (with_(JET_TAGGING, weights="Jet_mass"), NANO, r"'weights': 'Jet_mass' is jagged"),
        (
            with_(JET_TAGGING, keep=["run", "Muon_charge"]),
            NANO,
            r"'keep': 'Muon_charge' is jagged \(one value per muon\)",
        ),
        (
            with_(JET_TAGGING, outputs__jets__sort_by="-Muon_pt"),
            NANO,
            r"'sort_by' of output 'jets' is '-Muon_pt', which gives one value per muon \(Muon\), "
            r"but the output holds Jet objects.*-Jet_logpt",
        ),
        (
            with_(JET_TAGGING, outputs__jets__sort_by="-MET_pt"),
            NANO,
            r"'sort_by' of output 'jets' is '-MET_pt', which gives one value per event",
        ),
        (
            with_(JET_TAGGING, define__Jet_pt="Jet_mass * 2"),
            NANO,
            r"define 'Jet_pt' shadows the source field 'Jet_pt'.*rename the define",
        ),
        (
            with_(JET_TAGGING, define__ht="sum(Jet_pt + Muon_pt)"),
            NANO,
            r"define 'ht': .*combines Jet \(Jet_pt\) and Muon \(Muon_pt\)",
        ),
        (
            with_(JET_TAGGING, define__ht="sum(MET_pt)"),
            NANO,
            r"define 'ht': sum\(\) reduces the objects of each event, but 'MET_pt' is already",
        ),
        (
            with_(JET_TAGGING, outputs__jets__fields=["Jet_pt", "Jet_pt[:, :3]"]),
            NANO,
            r"unknown field 'Jet_pt\[:, :3\]'",
        ),
    ],
)
def test_validation_messages(
    schema: dict[str, Any], fields: dict[str, FieldInfo], match: str
) -> None:
    load_schema(schema)  # structurally fine: only the fields make it wrong
    with pytest.raises(SchemaError, match=match):
        validate(schema, fields)


def test_sliced_collection_output() -> None:
    schema = {
        "name": "t",
        "define": {"top_pt": "Jet_pt[:, :3]", "top_eta": "Jet_eta[:, :3]"},
        "outputs": {"top": {"fields": ["top_pt", "top_eta"], "ragged": True, "sort_by": "-top_pt"}},
    }
    out = validate(schema, NANO).outputs[0]
    assert out.collection == "Jet[:, 0:3]"
    bad = with_(schema, outputs__top__fields=["top_pt", "Jet_eta"])
    with pytest.raises(SchemaError, match=r"mixes collections"):
        validate(bad, NANO)


def test_per_event_fields_broadcast_in_padded_outputs() -> None:
    schema = minimal(jets={"fields": ["Jet_pt", "MET_pt"], "length": 3})
    assert validate(schema, NANO).outputs[0].field_dtypes == ("float32", "float32")


def test_records_schema_resolution() -> None:
    r = validate(SCHEMAS / "rntuple-records.yaml", RECORDS)
    pv, tracks = r.outputs
    assert (pv.kind, pv.fields) == ("flat", ("PV.x", "PV.y", "PV.z", "PV.npvs"))
    assert (tracks.kind, tracks.collection) == ("padded", "Track")
    assert pv.field_dtypes[-1] == "int32"
    with pytest.raises(SchemaError, match=r"unknown field 'PV.x' in output 'pv'"):
        validate(SCHEMAS / "rntuple-records.yaml", NANO)
