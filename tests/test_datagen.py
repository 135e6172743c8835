"""rntensor.datagen: files open with rntensor.sources and uproot, have the promised fields,
contents and layout, are reproducible, and (with ROOT installed) read the same in ROOT."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from _fixtures_data import FLAT, JAGGED, RECORD_FLAT, RECORD_JAGGED

from rntensor import datagen
from rntensor.sources import Jagged, open_source

CODES = {"zlib": 101, "lz4": 404, "zstd": 505, "lzma": 207}
RECORDS = {
    **{name: (dtype, None) for name, dtype in RECORD_FLAT.items()},
    **RECORD_JAGGED,
}


def read_all(path: str) -> dict:
    src = open_source(path)
    return src.read(sorted(src.fields), 0, src.num_entries)


@pytest.mark.parametrize("compression", ["zstd", "lz4", "zlib", "lzma", None])
@pytest.mark.parametrize("fmt", ["rntuple", "ttree"])
def test_generate_opens_with_the_right_fields(tmp_path, fmt, compression):
    path = datagen.generate(
        tmp_path / "out.root",
        n_events=1234,
        fmt=fmt,
        compression=compression,
        cluster_entries=300,
    )
    assert path == str(tmp_path / "out.root")
    src = open_source(path)
    assert src.kind == {"rntuple": "RNTuple", "ttree": "TTree"}[fmt]
    assert src.tree == "Events" and src.num_entries == 1234
    assert src.cluster_starts() == [0, 300, 600, 900, 1200, 1234]
    fields = src.fields
    assert set(fields) == set(FLAT) | set(JAGGED)
    for name, dtype in FLAT.items():
        assert (fields[name].dtype, fields[name].jagged) == (dtype, False), name
    for name, (dtype, coll) in JAGGED.items():
        assert (fields[name].dtype, fields[name].jagged, fields[name].collection) == (
            dtype,
            True,
            coll,
        ), name
    with uproot.open(path) as f:
        if compression is None:
            assert f.file.compression is None
        elif fmt == "ttree":
            assert f.file.fCompress == CODES[compression]
        else:
            pages = f["Events"].page_link_list
            assert {p.compression_settings for cluster in pages for p in cluster} == {
                CODES[compression]
            }


def test_ttree_layout_is_nanoaod(tmp_path):
    path = datagen.generate(tmp_path / "t.root", n_events=500, fmt="ttree", cluster_entries=200)
    with uproot.open(path) as f:
        tree = f["Events"]
        assert tree["Jet_pt"].count_branch.name == "nJet"
        assert tree["Jet_btag"].count_branch.name == "nJet"
        assert tree["Muon_charge"].count_branch.name == "nMuon"
        assert "Jet" not in tree and "Muon" not in tree
        assert tree["Jet_pt"].typename == "float[]"


def test_records(tmp_path):
    path = datagen.generate(tmp_path / "r.root", n_events=700, records=True, cluster_entries=300)
    src = open_source(path)
    for name, (dtype, coll) in RECORDS.items():
        info = src.fields[name]
        assert (info.dtype, info.jagged, info.collection) == (dtype, coll is not None, coll)
    cols = src.read(["Track.pt", "Track.eta", "PV.npvs"], 0, 700)
    assert cols["Track.pt"].counts.sum() > 0 and (cols["Track.pt"].counts == 0).any()
    np.testing.assert_array_equal(cols["Track.pt"].offsets, cols["Track.eta"].offsets)
    assert (cols["PV.npvs"] > 0).all()
    with pytest.raises(ValueError, match="records=True needs fmt='rntuple'"):
        datagen.generate(tmp_path / "x.root", n_events=10, fmt="ttree", records=True)


@pytest.mark.parametrize("fmt", ["rntuple", "ttree"])
def test_contents(tmp_path, fmt):
    cols = read_all(datagen.generate(tmp_path / "c.root", n_events=5000, fmt=fmt, seed=3))
    event = cols["event"]
    assert event[0] == 1 and (np.diff(event) == 1).all()
    assert (cols["run"] >= 316_000).all() and (cols["luminosityBlock"] >= 1).all()
    assert set(np.unique(cols["label"])) == {0, 1}
    assert 0.4 < cols["label"].mean() < 0.6
    jets, muons = cols["Jet_pt"], cols["Muon_pt"]
    assert isinstance(jets, Jagged)
    np.testing.assert_array_equal(cols["nJet"], jets.counts)
    np.testing.assert_array_equal(cols["nMuon"], muons.counts)
    assert 4.0 < jets.counts.mean() < 6.0 and jets.counts.max() <= 20
    assert (jets.counts == 0).any()
    assert 1.0 < muons.counts.mean() < 2.0 and (muons.counts == 0).mean() > 0.1
    # jets are sorted by decreasing pt inside each event
    same_event = jets.parents()[1:] == jets.parents()[:-1]
    assert (np.diff(jets.content)[same_event] <= 0).all()
    assert (jets.content > 0).all() and (cols["MET_pt"].astype(np.float64) >= 0).all()
    btag = cols["Jet_btag"].content
    assert ((btag >= 0) & (btag <= 1)).all()
    assert set(np.unique(cols["Muon_charge"].content)) == {-1, 1}
    assert (np.abs(cols["Jet_phi"].content) <= np.float32(np.pi)).all()
    assert cols["passTrigger"].dtype == bool and 0 < cols["passTrigger"].mean() < 1
    assert (cols["weight"] > 0).all()


def test_label_is_learnable(tmp_path):
    """A logistic regression on four event features beats chance by far."""
    cols = read_all(datagen.generate(tmp_path / "l.root", n_events=20_000, seed=1))
    jets = cols["Jet_pt"]
    n = len(jets)
    lead = np.zeros(n, np.float32)
    has = jets.counts > 0
    lead[has] = jets.content[jets.offsets[:-1][has]]
    n_b = np.bincount(jets.parents(), weights=cols["Jet_btag"].content > 0.5, minlength=n)
    x = np.column_stack([cols["MET_pt"] / 50, jets.counts / 5, lead / 100, n_b, np.ones(n)])
    y = cols["label"]
    w = np.zeros(x.shape[1])
    losses = []
    for _ in range(300):
        p = 1 / (1 + np.exp(-x @ w))
        losses.append(-np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12)))
        w -= 1.0 * x.T @ (p - y) / n
    assert losses[-1] < 0.5 < losses[0]
    assert ((x @ w > 0) == (y == 1)).mean() > 0.75


def test_reproducible_and_seeded(tmp_path):
    a = read_all(datagen.generate(tmp_path / "a.root", n_events=800, cluster_entries=300))
    b = read_all(datagen.generate(tmp_path / "b.root", n_events=800, cluster_entries=300))
    c = read_all(datagen.generate(tmp_path / "c.root", n_events=800, cluster_entries=300, seed=1))
    np.testing.assert_array_equal(a["MET_pt"], b["MET_pt"])
    np.testing.assert_array_equal(a["Jet_pt"].content, b["Jet_pt"].content)
    assert not np.array_equal(a["MET_pt"], c["MET_pt"])
    # a shorter file holds the first events of a longer one
    d = read_all(datagen.generate(tmp_path / "d.root", n_events=437, cluster_entries=300))
    np.testing.assert_array_equal(d["MET_pt"], a["MET_pt"][:437])
    np.testing.assert_array_equal(
        d["Jet_pt"].content, a["Jet_pt"].take_events(np.arange(437)).content
    )


@pytest.mark.parametrize("fmt", ["rntuple", "ttree"])
def test_generate_dataset(tmp_path, fmt):
    paths = datagen.generate_dataset(
        tmp_path / "ds",
        n_events=2000,
        n_files=4,
        fmt=fmt,
        cluster_entries=300,
        seed=5,
        records=fmt == "rntuple",
    )
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"part-0000{i}.root" for i in range(4)]
    with uproot.open(paths[0]) as f0, uproot.open(paths[-1]) as f3:
        assert f0["Events"].num_entries < f3["Events"].num_entries  # different sizes
    parts = [uproot.open(p)["Events"].arrays() for p in paths]
    assert sum(len(p) for p in parts) == 2000
    joined = ak.concatenate(parts)
    np.testing.assert_array_equal(joined.event, np.arange(1, 2001))
    # the same events as one file with the same seed and cluster grid
    single = datagen.generate(
        tmp_path / "one.root",
        n_events=2000,
        fmt=fmt,
        cluster_entries=300,
        seed=5,
        records=fmt == "rntuple",
    )
    assert ak.array_equal(uproot.open(single)["Events"].arrays(), joined)


def test_small_dataset_fixture(small_dataset, small_ttree_dataset):
    assert len(small_dataset.paths) == 3 and sum(small_dataset.entries) == 3000
    assert open_source(small_dataset.paths[1]).kind == "RNTuple"
    assert open_source(small_ttree_dataset.paths[2]).kind == "TTree"
    a = open_source(small_dataset.paths[2]).read(["event", "Jet_eta"], 0, 100)
    b = open_source(small_ttree_dataset.paths[2]).read(["event", "Jet_eta"], 0, 100)
    np.testing.assert_array_equal(a["event"], b["event"])
    np.testing.assert_array_equal(a["Jet_eta"].content, b["Jet_eta"].content)


def test_no_events(tmp_path):
    for fmt in ("rntuple", "ttree"):
        src = open_source(datagen.generate(tmp_path / f"{fmt}.root", n_events=0, fmt=fmt))
        assert src.num_entries == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_events": -1}, "n_events"),
        ({"n_events": 10, "fmt": "parquet"}, "fmt"),
        ({"n_events": 10, "compression": "gzip"}, "compression"),
        ({"n_events": 10, "level": 12}, "level"),
        ({"n_events": 10, "cluster_entries": 0}, "cluster_entries"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        datagen.generate(tmp_path / "x.root", **kwargs)
    assert not (tmp_path / "x.root").exists()
    with pytest.raises(ValueError, match="n_files"):
        datagen.generate_dataset(tmp_path, n_events=10, n_files=0)


def test_main(tmp_path, capsys):
    out = tmp_path / "one.root"
    assert (
        datagen.main([str(out), "--events", "600", "--format", "ttree", "--compression", "lz4"])
        == 0
    )
    assert open_source(str(out)).num_entries == 600
    assert capsys.readouterr().out.strip() == str(out)
    folder = tmp_path / "many"
    argv = [str(folder), "--events", "900", "--files", "3", "--records", "--cluster-entries", "200"]
    assert datagen.main(argv) == 0
    files = sorted(folder.glob("*.root"))
    assert len(files) == 3
    assert sum(open_source(str(p)).num_entries for p in files) == 900
    assert "Track.pt" in open_source(str(files[0])).fields
    with pytest.raises(SystemExit) as err:
        datagen.main([str(out), "--events", "10", "--format", "ttree", "--records"])
    assert err.value.code == 2


@pytest.mark.root
@pytest.mark.parametrize("fmt", ["rntuple", "ttree"])
def test_root_reads_the_same(tmp_path, pyroot, fmt):
    """ROOT's RDataFrame sees the same events as uproot in a datagen file."""
    records = fmt == "rntuple"
    path = datagen.generate(
        tmp_path / "x.root", n_events=3000, fmt=fmt, cluster_entries=700, records=records, seed=11
    )
    cols = read_all(path)
    df = pyroot.RDataFrame("Events", path)
    df = df.Define("jet_pt_sum", "Sum(Jet_pt)").Define("n_btag", "Sum(Jet_btag > 0.5f)")
    results = {
        "count": df.Count(),
        "met": df.Sum("MET_pt"),
        "jets": df.Sum("jet_pt_sum"),
        "njet": df.Sum("nJet"),
        "btag": df.Sum("n_btag"),
        "event": df.Sum("event"),
        "charge": df.Define("q", "Sum(Muon_charge)").Sum("q"),
        "trigger": df.Filter("passTrigger").Count(),
    }
    if records:
        df = df.Alias("pv_z", "PV.z").Alias("track_pt", "Track.pt")
        results["pv_z"] = df.Sum("pv_z")
        results["tracks"] = df.Define("t", "Sum(track_pt)").Sum("t")
    got = {k: v.GetValue() for k, v in results.items()}
    assert got["count"] == 3000
    assert got["event"] == cols["event"].sum()
    assert got["njet"] == cols["nJet"].sum() == len(cols["Jet_pt"].content)
    assert got["btag"] == (cols["Jet_btag"].content > 0.5).sum()
    assert got["charge"] == cols["Muon_charge"].content.sum()
    assert got["trigger"] == cols["passTrigger"].sum()
    assert got["met"] == pytest.approx(cols["MET_pt"].sum(dtype=np.float64), rel=1e-9)
    assert got["jets"] == pytest.approx(cols["Jet_pt"].content.sum(dtype=np.float64), rel=1e-6)
    if records:
        assert got["pv_z"] == pytest.approx(cols["PV.z"].sum(dtype=np.float64), rel=1e-6, abs=1e-3)
        assert got["tracks"] == pytest.approx(
            cols["Track.pt"].content.sum(dtype=np.float64), rel=1e-6
        )
