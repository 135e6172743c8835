"""Starter schemas (``rntensor schema init``) from small uproot-written files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot

from rntensor.errors import SchemaError
from rntensor.schema import load_schema, validate
from rntensor.schema.init import starter_schema, starter_yaml
from rntensor.sources import Column, FieldInfo, Jagged, open_source

N = 500


def _record(counts: np.ndarray, rng: np.random.Generator, **dtypes: str) -> ak.Array:
    total = int(counts.sum())
    return ak.zip(
        {k: ak.unflatten((rng.random(total) * 10).astype(dt), counts) for k, dt in dtypes.items()}
    )


@pytest.fixture(scope="module")
def nano_counts() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"Jet": rng.poisson(5, N), "Muon": rng.poisson(1, N)}


@pytest.fixture(scope="module")
def ttree_file(tmp_path_factory: pytest.TempPathFactory, nano_counts: dict) -> Path:
    rng = np.random.default_rng(8)
    data = {
        "run": np.full(N, 1, np.int64),
        "event": np.arange(N, dtype=np.int64),
        "MET_pt": (rng.random(N) * 100).astype(np.float32),
        "weight": np.ones(N, np.float32),
        "label": rng.integers(0, 3, N).astype(np.int32),
        "passTrigger": rng.random(N) < 0.5,
        "Jet": _record(nano_counts["Jet"], rng, pt="float32", eta="float32"),
        "Muon": _record(nano_counts["Muon"], rng, pt="float32", charge="int32"),
    }
    path = tmp_path_factory.mktemp("init") / "nano.root"
    with uproot.recreate(path) as f:
        types = {k: v.type.content if isinstance(v, ak.Array) else v.dtype for k, v in data.items()}
        f.mktree("Events", types).extend(data)
    return path


def test_starter_from_ttree(ttree_file: Path, nano_counts: dict) -> None:
    src = open_source(f"{ttree_file}:Events")
    doc = starter_schema(src)
    assert doc["name"] == "nano" and doc["tree"] == "Events"
    outputs = doc["outputs"]
    assert outputs["scalars"] == {"fields": ["MET_pt", "passTrigger", "nJet", "nMuon"]}
    jet_len = math.ceil(np.percentile(nano_counts["Jet"], 95))
    assert outputs["jet"] == {"fields": ["Jet_pt", "Jet_eta"], "length": jet_len}
    assert outputs["muon"]["fields"] == ["Muon_pt", "Muon_charge"]
    assert outputs["muon"]["length"] == max(1, math.ceil(np.percentile(nano_counts["Muon"], 95)))
    assert doc["labels"] == {"target": {"field": "label", "classes": 3}}
    assert doc["weights"] == "weight" and doc["keep"] == ["run", "event"]
    resolved = validate(doc, src.fields)  # the starter is valid for its own file
    assert "Jet_pt" in resolved.input_fields


def test_starter_yaml_has_header_and_loads(ttree_file: Path) -> None:
    text = starter_yaml(str(ttree_file))
    assert text.startswith("# Starter schema for ")
    assert "95th percentile" in text
    assert (
        load_schema(text).fingerprint()
        == load_schema(starter_schema(str(ttree_file))).fingerprint()
    )


def test_percentile_uses_at_most_max_entries(ttree_file: Path, nano_counts: dict) -> None:
    doc = starter_schema(str(ttree_file), max_entries=50, percentile=50)
    assert doc["outputs"]["jet"]["length"] == max(
        1, math.ceil(np.percentile(nano_counts["Jet"][:50], 50))
    )


def test_starter_from_rntuple_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 200
    counts = rng.poisson(8, n)
    data = ak.Array(
        {
            "event": np.arange(n, dtype=np.int64),
            "PV": ak.zip(
                {
                    "x": rng.random(n).astype(np.float32),
                    "npvs": rng.integers(0, 50, n).astype(np.int32),
                }
            ),
            "Track": _record(counts, rng, pt="float32", eta="float32"),
        }
    )
    path = tmp_path / "rec.root"
    with uproot.recreate(path) as f:
        f.mkrntuple("Events", data.layout.form).extend(data)
    src = open_source(str(path))
    if src.kind != "RNTuple":  # pragma: no cover - depends on the uproot version
        pytest.skip("uproot did not write an RNTuple")
    doc = starter_schema(src)
    assert doc["outputs"]["scalars"]["fields"] == ["PV.x", "PV.npvs"]
    assert doc["outputs"]["track"] == {
        "fields": ["Track.pt", "Track.eta"],
        "length": math.ceil(np.percentile(counts, 95)),
    }
    validate(doc, src.fields)


class FakeSource:
    """Just what starter_schema uses of a Source."""

    url = "mem://fake.root"
    tree = "Events"
    name = "fake.root"

    def __init__(self, fields: dict[str, FieldInfo], n: int, counts: np.ndarray) -> None:
        self.fields = fields
        self.num_entries = n
        self.counts = counts
        self.reads: list[tuple[list[str], int, int]] = []

    def read(self, paths: Sequence[str], entry_start: int, entry_stop: int) -> dict[str, Column]:
        self.reads.append((list(paths), entry_start, entry_stop))
        c = self.counts[entry_start:entry_stop]
        offsets = np.concatenate([[0], np.cumsum(c)]).astype(np.int64)
        out: dict[str, Column] = {}
        for p in paths:
            out[p] = (
                Jagged(offsets, np.zeros(offsets[-1], np.float32))
                if self.fields[p].jagged
                else np.zeros(entry_stop - entry_start, np.float32)
            )
        return out


def test_unsupported_fields_are_skipped_with_a_comment() -> None:
    fields: dict[str, Any] = {
        "MET_pt": FieldInfo("MET_pt", "float32", False),
        "HLT_names": FieldInfo("HLT_names", "object", False, None, False, "std::string"),
        "Jet_pt": FieldInfo("Jet_pt", "float32", True, "Jet"),
        "Jet_tags": FieldInfo(
            "Jet_tags", "object", True, "Jet", False, "std::vector<std::vector<int>>"
        ),
    }
    src = FakeSource(fields, 10, np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 100]))
    doc = starter_schema(src)  # type: ignore[arg-type]
    assert doc["outputs"] == {
        "scalars": {"fields": ["MET_pt"]},
        "jet": {"fields": ["Jet_pt"], "length": math.ceil(np.percentile(src.counts, 95))},
    }
    text = starter_yaml(src)  # type: ignore[arg-type]
    assert "#   HLT_names: std::string\n" in text
    assert "#   Jet_tags: std::vector<std::vector<int>>\n" in text
    assert "HLT_names" not in load_schema(text).to_yaml()


def test_reads_at_most_max_entries() -> None:
    fields = {"Jet_pt": FieldInfo("Jet_pt", "float32", True, "Jet")}
    src = FakeSource(fields, 1000, np.ones(1000, dtype=np.int64))
    doc = starter_schema(src, max_entries=100)  # type: ignore[arg-type]
    assert src.reads == [(["Jet_pt"], 0, 100)]
    assert doc["outputs"] == {"jet": {"fields": ["Jet_pt"], "length": 1}}


def test_no_supported_fields_is_an_error() -> None:
    fields = {"s": FieldInfo("s", "object", False, None, False, "std::string")}
    with pytest.raises(SchemaError, match=r"no field rntensor can turn into tensors"):
        starter_schema(FakeSource(fields, 3, np.zeros(3, np.int64)))  # type: ignore[arg-type]
