"""End to end: ROOT-written and uproot-written files → convert → shards, checked against an
independent uproot + awkward read; cache semantics; bad input."""

from __future__ import annotations

import json
import os
import shutil

import awkward as ak
import numpy as np
import pytest
import uproot

from rntensor.cache.read import open_cache
from rntensor.convert import convert, plan
from rntensor.errors import SchemaError, SourceError

SCHEMA = {
    "name": "fixture-jets",
    "selection": "nJet >= 1",
    "define": {"Jet_logpt": "log(Jet_pt)", "ht": "sum(Jet_pt)", "lead_pt": "Jet_pt[:, 0]"},
    "outputs": {
        "jets": {
            "fields": ["Jet_logpt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btag"],
            "length": 4,
            "pad_value": -9,
            "sort_by": "-Jet_pt",
            "normalize": "standard",
        },
        "muons": {"fields": ["Muon_pt", "Muon_eta", "Muon_charge"], "ragged": True},
        "scalars": {"fields": ["MET_pt", "MET_phi", "ht", "lead_pt"]},
    },
    "labels": {"target": {"field": "label", "classes": 2}},
    "weights": "weight",
    "keep": ["run", "event"],
}

RECORDS_SCHEMA = {
    "name": "fixture-records",
    "outputs": {
        "pv": {"fields": ["PV.x", "PV.y", "PV.z", "PV.npvs"]},
        "tracks": {
            "fields": ["Track.pt", "Track.eta", "Track.phi"],
            "length": 3,
            "sort_by": "-Track.pt",
        },
    },
    "keep": ["event"],
}


def _all_rows(path: str) -> dict[str, np.ndarray]:
    """Every shard's columns concatenated, ragged values kept with rebuilt offsets."""
    reader = open_cache(path)
    parts = [reader.read_shard(i) for i in range(len(reader.shards))]
    out: dict[str, np.ndarray] = {}
    for k in parts[0]:
        if k.endswith("_offsets"):
            counts = np.concatenate([np.diff(p[k]) for p in parts])
            out[k] = np.concatenate([[0], np.cumsum(counts)])
        else:
            out[k] = np.concatenate([p[k] for p in parts])
    return out


def _reference(path: str, tree: str) -> dict[str, np.ndarray]:
    """The obvious awkward implementation of SCHEMA, independent of rntensor."""
    a = uproot.open(path)[tree].arrays(
        [
            "nJet",
            "Jet_pt",
            "Jet_eta",
            "Jet_phi",
            "Jet_mass",
            "Jet_btag",
            "Muon_pt",
            "Muon_eta",
            "Muon_charge",
            "MET_pt",
            "MET_phi",
            "label",
            "weight",
            "run",
            "event",
        ]
    )
    entry = np.arange(len(a))
    sel = np.asarray(a.nJet >= 1)
    a, entry = a[sel], entry[sel]
    order = ak.argsort(a.Jet_pt, ascending=False, stable=True)
    feats = [np.log(a.Jet_pt), a.Jet_eta, a.Jet_phi, a.Jet_mass, a.Jet_btag]
    padded = [ak.to_numpy(ak.fill_none(ak.pad_none(f[order], 4, clip=True), -9)) for f in feats]
    mask = (
        ak.to_numpy(ak.fill_none(ak.pad_none(ak.ones_like(a.Jet_pt[order]), 4, clip=True), 0)) > 0
    )
    muons = np.stack(
        [
            ak.to_numpy(ak.flatten(a[f])).astype(np.float32)
            for f in ("Muon_pt", "Muon_eta", "Muon_charge")
        ],
        -1,
    )
    scalars = np.stack(
        [
            ak.to_numpy(a.MET_pt),
            ak.to_numpy(a.MET_phi),
            ak.to_numpy(ak.sum(a.Jet_pt, axis=1)),
            ak.to_numpy(a.Jet_pt[:, 0]),
        ],
        -1,
    )
    return {
        "jets": np.stack(padded, -1).astype(np.float32),
        "jets_mask": mask,
        "muons": muons,
        "muons_offsets": np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(a.Muon_pt)))]),
        "scalars": scalars.astype(np.float32),
        "target": ak.to_numpy(a.label).astype(np.int64),
        "weight": ak.to_numpy(a.weight),
        "run": ak.to_numpy(a.run),
        "event": ak.to_numpy(a.event),
        "_entry": entry,
    }


def test_convert_matches_uproot(root_file, tmp_path):
    out = str(tmp_path / "cache")
    res = convert(
        SCHEMA, [root_file.spec], out, scheduler="synchronous", shard_size="40 kB", progress=False
    )
    assert res.shards_written == res.shards_total >= 2  # several shards: ranges split at clusters
    got = _all_rows(out)
    want = _reference(root_file, root_file.tree)
    assert set(want) <= set(got)
    for k, v in want.items():
        np.testing.assert_allclose(
            got[k], v, rtol=1e-6, err_msg=k
        ) if v.dtype.kind == "f" else np.testing.assert_array_equal(got[k], v, err_msg=k)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["num_rows"] == len(want["target"])
    st = manifest["stats"]["jets"]["Jet_eta"]
    valid = want["jets"][..., 1][want["jets_mask"]]
    assert st["count"] == valid.size
    assert st["mean"] == pytest.approx(valid.mean(), rel=1e-5, abs=1e-6)
    assert st["std"] == pytest.approx(valid.std(), rel=1e-4)


def test_empty_collections_are_kept(root_file, tmp_path):
    schema = {**SCHEMA, "selection": None}
    schema = {k: v for k, v in schema.items() if k != "selection"}
    schema["define"] = {"Jet_logpt": "log(Jet_pt)", "ht": "sum(Jet_pt)", "lead_pt": "Jet_pt[:, 0]"}
    out = str(tmp_path / "c")
    convert(schema, [root_file.spec], out, scheduler="synchronous", progress=False)
    got = _all_rows(out)
    n = uproot.open(root_file)[root_file.tree].num_entries
    assert len(got["target"]) == n
    empty = ~got["jets_mask"].any(1)
    assert empty.sum() == root_file.info["n_events_without_jets"] > 0
    assert np.all(got["jets"][empty] == -9)
    assert np.isnan(got["scalars"][empty, 3]).all()  # Jet_pt[:, 0] of an event without jets
    assert (np.diff(got["muons_offsets"]) == 0).sum() == root_file.info["n_events_without_muons"]


def test_record_fields(records_file, tmp_path):
    out = str(tmp_path / "c")
    convert(RECORDS_SCHEMA, [records_file.spec], out, scheduler="synchronous", progress=False)
    got = _all_rows(out)
    a = uproot.open(records_file)[records_file.tree].arrays(["PV", "Track", "event"])
    np.testing.assert_allclose(got["pv"][:, 0], ak.to_numpy(a.PV.x))
    np.testing.assert_allclose(got["pv"][:, 3], ak.to_numpy(a.PV.npvs))
    order = ak.argsort(a.Track.pt, ascending=False, stable=True)
    lead = ak.to_numpy(ak.fill_none(ak.pad_none(a.Track.pt[order], 3, clip=True), 0))
    np.testing.assert_allclose(got["tracks"][..., 0], lead)
    np.testing.assert_array_equal(got["event"], ak.to_numpy(a.event))


def test_rerun_does_no_work_and_schema_change_redoes(small_dataset, tmp_path):
    out = str(tmp_path / "c")
    first = convert(
        SCHEMA,
        [small_dataset.folder],
        out,
        scheduler="threads",
        shard_size="200 kB",
        progress=False,
    )
    assert first.shards_written == first.shards_total > 3
    again = convert(
        SCHEMA,
        [small_dataset.folder],
        out,
        scheduler="threads",
        shard_size="200 kB",
        progress=False,
    )
    assert again.shards_written == 0 and again.shards_reused == first.shards_total
    assert "nothing to do" in again.summary()
    changed = {**SCHEMA, "outputs": {**SCHEMA["outputs"], "scalars": {"fields": ["MET_pt"]}}}
    third = convert(
        changed,
        [small_dataset.folder],
        out,
        scheduler="threads",
        shard_size="200 kB",
        progress=False,
    )
    assert third.shards_written == first.shards_total
    assert open_cache(out).columns["scalars"]["shape"] == [1]


def test_touching_one_file_redoes_only_its_shards(small_dataset, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(small_dataset.folder, src)
    out = str(tmp_path / "c")
    first = convert(
        SCHEMA, [str(src)], out, scheduler="synchronous", shard_size="200 kB", progress=False
    )
    victim = sorted(src.glob("*.root"))[0]
    os.utime(victim, (1, 1))
    n_victim = sum(1 for s in open_cache(out).shards if s["source"]["name"] == victim.name)
    second = convert(
        SCHEMA, [str(src)], out, scheduler="synchronous", shard_size="200 kB", progress=False
    )
    assert second.shards_written == n_victim < first.shards_total


def test_no_partial_files_left(small_dataset, tmp_path):
    out = tmp_path / "c"
    convert(SCHEMA, [small_dataset.folder], str(out), scheduler="threads", progress=False)
    names = os.listdir(out / "shards")
    assert not [n for n in names if ".tmp" in n]
    assert len([n for n in names if n.endswith(".arrow")]) == len(
        [n for n in names if n.endswith(".json")]
    )


def test_distributed_cluster(small_dataset, dask_client, tmp_path):
    out = str(tmp_path / "c")
    res = convert(
        SCHEMA,
        [small_dataset.folder],
        out,
        scheduler=dask_client,
        shard_size="200 kB",
        progress=False,
    )
    ref = str(tmp_path / "ref")
    convert(
        SCHEMA,
        [small_dataset.folder],
        ref,
        scheduler="synchronous",
        shard_size="200 kB",
        progress=False,
    )
    a, b = _all_rows(out), _all_rows(ref)
    assert res.shards_written > 1
    for k in b:
        np.testing.assert_array_equal(a[k], b[k])


def test_ttree_and_rntuple_agree(small_dataset, small_ttree_dataset, tmp_path):
    a = str(tmp_path / "a")
    b = str(tmp_path / "b")
    convert(SCHEMA, [small_dataset.folder], a, scheduler="synchronous", progress=False)
    convert(SCHEMA, [small_ttree_dataset.folder], b, scheduler="synchronous", progress=False)
    ra, rb = _all_rows(a), _all_rows(b)
    for k in ra:
        np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)


# -- bad input ------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(SourceError, match=r"nothere\.root"):
        convert(
            SCHEMA, [str(tmp_path / "nothere.root")], str(tmp_path / "c"), scheduler="synchronous"
        )
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_not_root(tmp_path):
    bad = tmp_path / "notes.root"
    bad.write_text("hello " * 1000)
    with pytest.raises(SourceError, match="not a ROOT file"):
        convert(SCHEMA, [str(bad)], str(tmp_path / "c"), scheduler="synchronous")


def test_unknown_field_is_schema_error_before_work(rntuple_file, tmp_path):
    bad = {**SCHEMA, "outputs": {"scalars": {"fields": ["MET_ptt"]}}}
    with pytest.raises(SchemaError, match="MET_pt"):
        convert(bad, [rntuple_file.spec], str(tmp_path / "c"), scheduler="synchronous")
    assert not (tmp_path / "c").exists()


def _truncated_copy(src: str, dst) -> str:
    with open(src, "rb") as f:
        data = f.read()
    dst.write_bytes(data[: int(len(data) * 0.6)])
    return str(dst)


def test_corrupt_file_keeps_other_shards_and_skip_bad(small_dataset, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(small_dataset.folder, src)
    files = sorted(src.glob("*.root"))
    # corrupt compressed pages early in one file (its header and footer stay readable)
    data = bytearray(files[1].read_bytes())
    a, b = int(len(data) * 0.2), int(len(data) * 0.3)
    data[a:b] = os.urandom(b - a)
    files[1].write_bytes(bytes(data))
    out = tmp_path / "c"
    with pytest.raises(SourceError) as info:
        convert(
            SCHEMA,
            [str(src)],
            str(out),
            scheduler="synchronous",
            shard_size="200 kB",
            progress=False,
        )
    msg = str(info.value)
    assert files[1].name in msg and "entries" in msg and "\n" not in msg
    assert not (out / "manifest.json").exists()
    kept = [n for n in os.listdir(out / "shards") if n.endswith(".arrow")]
    assert kept  # finished shards of the good files are kept for the next run
    res = convert(
        SCHEMA,
        [str(src)],
        str(out),
        scheduler="synchronous",
        shard_size="200 kB",
        skip_bad=True,
        progress=False,
    )
    assert res.failures and all(f["source"].endswith(files[1].name) for f in res.failures)
    assert res.shards_reused >= len(kept)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failures"] and all(
        s["source"]["name"] != files[1].name or True for s in manifest["shards"]
    )
    failed = {(f["entry_start"], f["entry_stop"]) for f in manifest["failures"]}
    for s in manifest["shards"]:
        if s["source"]["name"] == files[1].name:
            assert (s["entry_start"], s["entry_stop"]) not in failed


def test_truncated_file_skip_bad(small_dataset, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(small_dataset.folder, src)
    victim = sorted(src.glob("*.root"))[0]
    _truncated_copy(str(victim), victim)
    res = convert(
        SCHEMA,
        [str(src)],
        str(tmp_path / "c"),
        scheduler="synchronous",
        skip_bad=True,
        progress=False,
    )
    assert res.failures and victim.name in res.failures[0]["source"]
    assert res.num_rows > 0


def test_plan_aligns_to_clusters(root_file):
    resolved, tasks, _ = plan(SCHEMA, [root_file.spec], shard_size="30 kB")
    from rntensor.sources import open_source

    starts = set(open_source(root_file.spec).cluster_starts())
    assert len(tasks) >= 2
    for t in tasks:
        assert t.entry_start in starts and t.entry_stop in starts
    assert tasks[0].entry_start == 0 and tasks[-1].entry_stop == root_file.n_entries
    assert "Jet_pt" in resolved.input_fields


def test_interrupted_run_resumes(tmp_path):
    """Kill a conversion after its first shard; the next run reuses what was finished."""
    import signal
    import subprocess
    import sys
    import time

    from rntensor.datagen import generate_dataset

    # 120 tasks: enough that the run is still going when the signal lands (3,000 events
    # sometimes finished between the first shard and the signal)
    folder = tmp_path / "in"
    generate_dataset(folder, n_events=30_000, n_files=3, seed=7, cluster_entries=250)
    out = tmp_path / "c"
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(SCHEMA))
    cmd = [sys.executable, "-m", "rntensor.cli", "convert", str(schema), str(folder), "-o", str(out),
           "--scheduler", "synchronous", "--shard-size", "20 kB", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "shards").is_dir() and any(
            n.endswith(".json") for n in os.listdir(out / "shards")
        ):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail("the conversion finished before it could be interrupted; use smaller shards")
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert not (out / "manifest.json").exists()
    done = [n for n in os.listdir(out / "shards") if n.endswith(".json")]
    res = convert(
        SCHEMA, [str(folder)], str(out), scheduler="synchronous", shard_size="20 kB",
        progress=False,
    )  # fmt: skip
    assert res.shards_reused >= len(done) >= 1
    assert res.shards_reused + res.shards_written == res.shards_total
    assert not [n for n in os.listdir(out / "shards") if ".tmp-" in n]


def test_killed_worker_is_survived(small_dataset, tmp_path):
    """SIGKILL a Dask worker process mid-conversion: its tasks are rescheduled, nothing is lost."""
    import signal
    import threading
    import time

    from rntensor.testing import local_cluster

    out = tmp_path / "c"
    killed: list[int] = []

    def kill_one_worker(client) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shards = out / "shards"
            if shards.is_dir() and any(n.endswith(".json") for n in os.listdir(shards)):
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as client:
        client.wait_for_workers(2, timeout=60)
        killer = threading.Thread(target=kill_one_worker, args=(client,), daemon=True)
        killer.start()
        res = convert(
            SCHEMA,
            [small_dataset.folder],
            str(out),
            scheduler=client,
            shard_size="20 kB",
            progress=False,
        )
        killer.join(timeout=60)
    assert killed, "no worker was killed: the conversion finished before any shard appeared"
    assert not res.failures and res.shards_written == res.shards_total > 4
    ref = str(tmp_path / "ref")
    convert(
        SCHEMA,
        [small_dataset.folder],
        ref,
        scheduler="synchronous",
        shard_size="20 kB",
        progress=False,
    )
    a, b = _all_rows(str(out)), _all_rows(ref)
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
