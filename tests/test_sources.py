"""rntensor.sources on every committed fixture file (ROOT- and uproot-written, TTree and
RNTuple, four compressions), checked against independent uproot reads."""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor

import awkward as ak
import numpy as np
import pytest
import uproot
from _fixtures_data import DATA_DIR, FIXTURE_FILES, FLAT, JAGGED, RECORD_FLAT, RECORD_JAGGED
from hypothesis import given
from hypothesis import strategies as st

from rntensor.errors import SourceError
from rntensor.sources import (
    FieldInfo,
    Jagged,
    Source,
    expand_inputs,
    open_source,
    plan_ranges,
    split_spec,
    to_column,
)

EXTRA_JAGGED = {"Photon_pt": ("float32", "Photon")}


def expected_fields(f) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    flat, jagged = dict(FLAT), dict(JAGGED)
    if f.has_records:
        flat.update(RECORD_FLAT)
        jagged.update(RECORD_JAGGED)
    for name in f.extra_fields:
        jagged[name] = EXTRA_JAGGED[name]
    return flat, jagged


def uproot_array(f, path: str, start: int, stop: int, *, obj=None) -> ak.Array:
    """The field read by uproot directly (field by field), without rntensor."""
    if obj is None:
        with uproot.open(str(f)) as file:
            return uproot_array(f, path, start, stop, obj=file[f.tree])
    top, _, sub = path.partition(".")
    if f.format == "RNTuple":
        arr = obj[top].array(entry_start=start, entry_stop=stop, library="ak")
        return arr[sub] if sub else arr
    return obj[path].array(entry_start=start, entry_stop=stop, library="ak")


def sub_ranges(starts: list[int]) -> list[tuple[int, int]]:
    """Entry ranges that do not start at 0: inside, across and at the ends of clusters."""
    n = starts[-1]
    return [
        (starts[1] + 7, starts[3] - 3),  # across two cluster boundaries
        (starts[1] - 1, starts[1] + 1),  # one entry each side of a boundary
        (starts[2], starts[2] + 1),  # one entry at a cluster start
        (n - 13, n),  # the tail
        (starts[1], starts[2]),  # exactly one cluster
        (5, 5),  # empty
    ]


def assert_same(col, arr: ak.Array) -> None:
    if isinstance(col, Jagged):
        assert col.offsets.dtype == np.int64
        assert col.offsets[0] == 0
        assert len(col.offsets) == len(arr) + 1
        np.testing.assert_array_equal(col.counts, ak.to_numpy(ak.num(arr)))
        flat = ak.to_numpy(ak.flatten(arr))
        assert col.content.dtype == flat.dtype
        np.testing.assert_array_equal(col.content, flat)
    else:
        assert isinstance(col, np.ndarray) and col.ndim == 1
        values = ak.to_numpy(arr)
        assert col.dtype == values.dtype
        np.testing.assert_array_equal(col, values)


# -- the fixture files themselves -----------------------------------------------------------
def test_fixture_index_matches_files(fixture_index):
    files = fixture_index["files"]
    assert {(e["writer"], e["format"]) for e in files} == {
        ("ROOT", "TTree"),
        ("ROOT", "RNTuple"),
        ("uproot", "TTree"),
        ("uproot", "RNTuple"),
    }
    for fmt in ("TTree", "RNTuple"):
        algs = {e["compression"] for e in files if e["writer"] == "ROOT" and e["format"] == fmt}
        assert algs == {"zlib", "lz4", "zstd", "lzma"}
    assert any(e["has_records"] and e["writer"] == "ROOT" for e in files)
    total = 0
    for e in files:
        path = DATA_DIR / e["path"]
        assert path.stat().st_size == e["size_bytes"]
        total += e["size_bytes"]
        with uproot.open(path) as f:
            assert f[e["tree"]].num_entries == e["n_entries"]
            assert f.file.fCompress == e["compression_code"] or e["format"] == "RNTuple"
        assert e["n_clusters"] >= 3
        assert e["n_events_without_jets"] > 0 and e["n_events_without_muons"] > 0
    assert total <= 5_000_000


# -- metadata -------------------------------------------------------------------------------
def test_kind_tree_and_entries(root_file):
    src = open_source(root_file)
    assert src.kind == root_file.format
    assert src.tree == root_file.tree == "Events"
    assert src.num_entries == root_file.n_entries
    assert src.name == os.path.basename(root_file)
    assert root_file in src.where
    by_spec = open_source(root_file.spec)
    assert by_spec.kind == root_file.format and by_spec.tree == "Events"
    assert open_source(f"file://{root_file}").num_entries == root_file.n_entries


def test_fields(root_file):
    fields = open_source(root_file).fields
    flat, jagged = expected_fields(root_file)
    assert set(fields) == set(flat) | set(jagged)
    for path, info in fields.items():
        assert isinstance(info, FieldInfo) and info.path == path
        assert info.supported, path
    for path, dtype in flat.items():
        info = fields[path]
        assert (info.dtype, info.jagged, info.collection) == (dtype, False, None), path
    for path, (dtype, coll) in jagged.items():
        info = fields[path]
        assert (info.dtype, info.jagged, info.collection) == (dtype, True, coll), path


def test_record_fields_are_flattened(records_file):
    fields = open_source(records_file).fields
    assert fields["PV.x"].jagged is False and fields["PV.npvs"].dtype == "int32"
    assert fields["Track.pt"].jagged is True and fields["Track.pt"].collection == "Track"
    assert "PV" not in fields and "Track" not in fields


def test_cluster_starts(root_file):
    starts = open_source(root_file).cluster_starts()
    assert starts[0] == 0 and starts[-1] == root_file.n_entries
    assert all(a < b for a, b in itertools.pairwise(starts))
    assert len(starts) - 1 == root_file.n_clusters >= 3


def test_plan_ranges_on_file(root_file):
    starts = open_source(root_file).cluster_starts()
    n = root_file.n_entries
    for target in (1, 300, 700, 10**9):
        ranges = plan_ranges(starts, target_entries=target)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert {b for r in ranges for b in r} <= set(starts)
    assert plan_ranges(starts, target_entries=1) == list(itertools.pairwise(starts))
    assert plan_ranges(starts, target_entries=10**9) == [(0, n)]


# -- reading --------------------------------------------------------------------------------
def test_read_matches_uproot(root_file):
    src = open_source(root_file)
    paths = sorted(src.fields)
    with uproot.open(str(root_file)) as file:
        obj = file[root_file.tree]
        for start, stop in sub_ranges(src.cluster_starts()):
            cols = src.read(paths, start, stop)
            assert list(cols) == paths
            for path in paths:
                assert len(cols[path]) == stop - start, path
                assert_same(cols[path], uproot_array(root_file, path, start, stop, obj=obj))


def test_read_counters_match_collections(root_file):
    src = open_source(root_file)
    cols = src.read(["nJet", "Jet_pt", "Jet_btag", "nMuon", "Muon_charge"], 100, 1500)
    np.testing.assert_array_equal(cols["nJet"], cols["Jet_pt"].counts)
    np.testing.assert_array_equal(cols["Jet_pt"].offsets, cols["Jet_btag"].offsets)
    np.testing.assert_array_equal(cols["nMuon"], cols["Muon_charge"].counts)
    assert (cols["nJet"] == 0).any() and (cols["nMuon"] == 0).any()  # empty collections
    assert set(np.unique(cols["Muon_charge"].content)) <= {-1, 1}


def test_read_records(records_file):
    src = open_source(records_file)
    cols = src.read(["PV.z", "PV.npvs", "Track.pt", "Track.phi", "event"], 321, 1234)
    with uproot.open(str(records_file)) as f:
        ref = f["Events"].arrays(["PV", "Track", "event"], entry_start=321, entry_stop=1234)
    assert_same(cols["PV.z"], ref.PV.z)
    assert_same(cols["PV.npvs"], ref.PV.npvs)
    assert_same(cols["Track.pt"], ref.Track.pt)
    np.testing.assert_array_equal(cols["Track.pt"].offsets, cols["Track.phi"].offsets)


def test_read_from_threads(root_file):
    src = open_source(root_file)  # not opened yet: threads race to open it
    ranges = plan_ranges(src.cluster_starts(), target_entries=1)
    src.close()
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda r: src.read(["Jet_pt", "event"], *r)["event"], ranges))
    np.testing.assert_array_equal(
        np.concatenate(parts), src.read(["event"], 0, src.num_entries)["event"]
    )


def test_read_nothing(root_file):
    assert open_source(root_file).read([], 0, 10) == {}


# -- Jagged ---------------------------------------------------------------------------------
def test_jagged_helpers_match_awkward(root_file):
    src = open_source(root_file)
    cols = src.read(["Jet_pt", "MET_pt"], 250, 1250)
    jets = cols["Jet_pt"]
    ref = uproot_array(root_file, "Jet_pt", 250, 1250)
    assert len(jets) == len(ref) and jets.dtype == np.float32
    np.testing.assert_array_equal(jets.local_index(), ak.flatten(ak.local_index(ref)))
    parents = ak.flatten(ak.broadcast_arrays(np.arange(len(ref)), ref)[0])
    np.testing.assert_array_equal(jets.parents(), ak.to_numpy(parents))

    mask = cols["MET_pt"] > 30
    assert_same(jets.take_events(mask), ref[mask])
    index = np.random.default_rng(0).integers(0, len(ref), 300)  # unordered, repeats
    assert_same(jets.take_events(index), ref[index])
    assert jets.take_events(np.ones(len(jets), bool)) is jets
    assert len(jets.take_events(np.zeros(len(jets), bool))) == 0


def test_jagged_edge_cases():
    empty = Jagged(np.zeros(1, np.int64), np.zeros(0, np.float32))
    assert len(empty) == 0 and empty.local_index().size == 0 and empty.parents().size == 0
    assert len(empty.take_events(np.zeros(0, np.int64))) == 0
    no_values = Jagged(np.zeros(4, np.int64), np.zeros(0, np.float32))
    assert list(no_values.counts) == [0, 0, 0]
    assert len(no_values.take_events([2, 0])) == 2  # a list works too
    j = Jagged(np.array([0, 2, 2, 5]), np.arange(5, dtype=np.float32))
    assert list(j.local_index()) == [0, 1, 0, 1, 2]
    assert list(j.parents()) == [0, 0, 2, 2, 2]
    t = j.take_events(np.array([2, 0]))
    assert list(t.offsets) == [0, 3, 5] and list(t.content) == [2, 3, 4, 0, 1]
    with pytest.raises(ValueError, match="one value per event"):
        j.take_events(np.array([True, False]))


@given(
    st.lists(st.lists(st.integers(-1000, 1000), max_size=6), max_size=30),
    st.data(),
)
def test_take_events_property(lists, data):
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    j = Jagged(offsets, np.array([v for x in lists for v in x], dtype=np.int64))
    mask = np.array(
        data.draw(st.lists(st.booleans(), min_size=len(lists), max_size=len(lists))), bool
    )
    picked = j.take_events(mask)
    assert picked.offsets[0] == 0
    assert [list(picked.content[a:b]) for a, b in itertools.pairwise(picked.offsets)] == [
        x for x, m in zip(lists, mask, strict=True) if m
    ]
    if lists:
        index = np.array(data.draw(st.lists(st.integers(0, len(lists) - 1), max_size=20)), np.int64)
        picked = j.take_events(index)
        assert [list(picked.content[a:b]) for a, b in itertools.pairwise(picked.offsets)] == [
            lists[i] for i in index
        ]
    assert len(j) == len(lists)


def test_to_column_rejects_nested_lists():
    with pytest.raises(SourceError, match="cannot turn"):
        to_column(ak.Array([[[1.0]], []]))


# -- plan_ranges ----------------------------------------------------------------------------
def test_plan_ranges_cases():
    assert plan_ranges([], target_entries=10) == []
    assert plan_ranges([0], target_entries=10) == []
    assert plan_ranges([0, 10], target_entries=100) == [(0, 10)]
    assert plan_ranges([0, 10, 20, 30, 40], target_entries=20) == [(0, 20), (20, 40)]
    assert plan_ranges([0, 1000, 2000], target_entries=100) == [(0, 1000), (1000, 2000)]
    # a small tail joins the range before it
    assert plan_ranges([0, 100, 110], target_entries=100) == [(0, 110)]
    assert plan_ranges([0, 5, 10], target_entries=0) == [(0, 5), (5, 10)]


@given(st.sets(st.integers(0, 5000), min_size=2, max_size=60), st.integers(1, 3000))
def test_plan_ranges_property(starts, target):
    starts = sorted(starts)
    ranges = plan_ranges(starts, target_entries=target)
    assert ranges[0][0] == starts[0] and ranges[-1][1] == starts[-1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert all(a < b for a, b in ranges)
    assert {b for r in ranges for b in r} <= set(starts)


# -- pickling -------------------------------------------------------------------------------
def test_pickle_after_opening(root_file):
    src = open_source(root_file)
    before = src.read(["Jet_pt", "MET_pt"], 10, 500)
    blob = pickle.dumps(src)
    assert len(blob) < 50_000  # metadata only, no file handle or buffers
    clone = pickle.loads(blob)
    assert isinstance(clone, Source) and clone.url == src.url
    assert clone.kind == src.kind and clone.fields == src.fields
    after = clone.read(["Jet_pt", "MET_pt"], 10, 500)
    np.testing.assert_array_equal(after["MET_pt"], before["MET_pt"])
    np.testing.assert_array_equal(after["Jet_pt"].content, before["Jet_pt"].content)
    src.close()
    assert pickle.loads(pickle.dumps(src)).num_entries == root_file.n_entries


def test_pickle_before_opening():
    f = FIXTURE_FILES[0]
    clone = pickle.loads(pickle.dumps(open_source(f.spec)))
    assert clone.tree == "Events" and clone.num_entries == f.n_entries


# -- inputs ---------------------------------------------------------------------------------
def test_split_spec():
    assert split_spec("run1.root:Events") == ("run1.root", "Events")
    assert split_spec("/data/run1.root") == ("/data/run1.root", None)
    assert split_spec("s3://bucket/a/run1.root:Events") == ("s3://bucket/a/run1.root", "Events")
    assert split_spec("data/*.root:Events") == ("data/*.root", "Events")


@pytest.fixture
def tree_of_files(tmp_path):
    """tmp/ds/{x0.root, a/x1.root, a/b/x2.root, notes.txt} and an empty folder."""
    root = tmp_path / "ds"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    names = ["x0.root", "a/x1.root", "a/b/x2.root"]
    for name, f in zip(names, FIXTURE_FILES[:3], strict=True):
        shutil.copy(f, root / name)
    (root / "notes.txt").write_text("not a ROOT file")
    return root, [str(root / n) for n in names]


def test_expand_inputs(tree_of_files):
    root, files = tree_of_files
    assert expand_inputs([str(root)]) == sorted(files)
    assert expand_inputs([str(root / "*.root")]) == [files[0]]
    assert expand_inputs([f"{root}/**/*.root"]) == sorted(files)
    assert expand_inputs([f"{root}/a/*.root:Events"]) == [f"{files[1]}:Events"]
    assert expand_inputs([f"file://{files[0]}"]) == [files[0]]
    assert expand_inputs([files[2], files[0]]) == [files[2], files[0]]  # order kept
    for spec in expand_inputs([str(root), f"{root}/a/*.root:Events"]):
        src = open_source(spec)
        assert src.tree == "Events" and src.num_entries > 0


def test_expand_inputs_finds_nothing(tree_of_files, tmp_path):
    root, _ = tree_of_files
    with pytest.raises(SourceError, match="no ROOT files") as err:
        expand_inputs([str(root / "*.parquet")])
    assert "*.parquet" in str(err.value)
    with pytest.raises(SourceError, match="no ROOT files"):
        expand_inputs([str(tmp_path / "empty")])


# -- errors ---------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.root")
    assert expand_inputs([missing]) == [missing]  # found out when opened
    with pytest.raises(SourceError, match="not found") as err:
        _ = open_source(missing).kind
    assert missing in str(err.value)
    assert isinstance(err.value, OSError)
    with pytest.raises(SourceError, match="not found"):
        open_source(missing).fingerprint()


@pytest.mark.parametrize("content", [b"", b"hello, world\n" * 200], ids=["empty", "text"])
def test_not_a_root_file(tmp_path, content):
    path = tmp_path / "notes.root"
    path.write_bytes(content)
    with pytest.raises(SourceError) as err:
        _ = open_source(str(path)).fields
    assert str(path) in str(err.value)


def test_truncated_file(tmp_path, root_file):
    cut = tmp_path / f"cut_{os.path.basename(root_file)}"
    data = DATA_DIR.joinpath(root_file.path).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    src = open_source(str(cut))
    with pytest.raises(SourceError) as err:
        # whichever step notices first: opening, metadata or reading pages
        _ = src.fields
        src.cluster_starts()
        src.read(sorted(src.fields), 0, src.num_entries)
    assert str(cut) in str(err.value)


def test_missing_tree_name(root_file):
    with pytest.raises(SourceError, match="did you mean 'Events'") as err:
        _ = open_source(f"{root_file}:Event").kind
    assert str(root_file) in str(err.value)
    with pytest.raises(SourceError, match="Events"):
        _ = open_source(root_file, tree="Jets").fields


def test_unknown_field(root_file):
    src = open_source(root_file)
    with pytest.raises(SourceError, match="did you mean 'Jet_pt'") as err:
        src.read(["MET_pt", "Jet_ptt"], 0, 10)
    assert str(root_file) in str(err.value)
    with pytest.raises(SourceError, match="not found"):
        src.read(["zzzzzz"], 0, 10)


def test_objects_that_are_not_trees(tmp_path):
    path = str(tmp_path / "mixed.root")
    with uproot.recreate(path) as f:
        f["hist"] = np.histogram(np.arange(10.0), bins=5)
        f["A"] = {"x": np.arange(5, dtype=np.float32)}
        f["B"] = {"x": np.arange(5, dtype=np.float32)}
    with pytest.raises(SourceError, match="not a TTree"):
        _ = open_source(f"{path}:hist").kind
    with pytest.raises(SourceError, match="several trees"):
        _ = open_source(path).kind
    assert open_source(f"{path}:B").num_entries == 5
    only_hist = str(tmp_path / "hist.root")
    with uproot.recreate(only_hist) as f:
        f["hist"] = np.histogram(np.arange(10.0), bins=5)
    with pytest.raises(SourceError, match="no TTree or RNTuple"):
        _ = open_source(only_hist).kind


def test_unsupported_field(tmp_path):
    path = str(tmp_path / "nested.root")
    with uproot.recreate(path) as f:
        f.mkrntuple(
            "Events", {"nested": ak.Array([[[1.0], []], [], [[2.0, 3.0]]]), "x": np.arange(3.0)}
        )
    src = open_source(path)
    assert src.fields["nested"].supported is False
    assert src.fields["x"].supported is True
    np.testing.assert_array_equal(src.read(["x"], 1, 3)["x"], [1.0, 2.0])
    with pytest.raises(SourceError, match="'nested'") as err:
        src.read(["nested"], 0, 3)
    assert path in str(err.value)


def test_fingerprint(tmp_path):
    path = tmp_path / "copy.root"
    shutil.copy(FIXTURE_FILES[0], path)
    fp = open_source(str(path)).fingerprint()
    assert fp["size"] == path.stat().st_size and "mtime" in fp
    os.utime(path, (1_000_000_000, 1_000_000_000))
    assert open_source(str(path)).fingerprint() != fp
