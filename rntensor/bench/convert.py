"""Section A: conversion against uproot ``arrays()``, the awkward transform and a memory copy."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from rntensor.bench.data import _read_fields
from rntensor.bench.harness import TreeMemory, _timed, run_child
from rntensor.bench.report import _brief, _criterion, _figure, _first, _make_figure, _median_memory

__all__ = ["awkward_transform", "bench_convert"]


# -- A: conversion --------------------------------------------------------------------------
def _warm_read(files: Sequence[str], fields: Sequence[str]) -> None:
    """Imports, uproot's lazy set-up and the first file's metadata, before any clock starts."""
    import awkward  # noqa: F401
    import numpy  # noqa: F401
    import uproot

    with uproot.open(files[0]) as f:
        f["Events"].arrays(list(fields), entry_stop=100)


def _child_uproot(p: dict[str, Any]) -> dict[str, Any]:
    _warm_read(p["files"], p["fields"])
    nbytes = [0]

    def keep(a: Any) -> None:
        nbytes[0] += a.layout.nbytes

    with TreeMemory() as mem:
        s, n = _timed(lambda: _read_fields(p["files"], p["fields"], keep))
    return {"seconds": s, "events": n, "nbytes": nbytes[0], "memory": mem.figures()}


def awkward_transform(a: Any) -> dict[str, Any]:
    """What a user writes today for DEMO_SCHEMA: awkward operations, then numpy."""
    import awkward as ak
    import numpy as np

    a = a[(a.nJet >= 2) & (a.MET_pt > 10)]
    order = ak.argsort(a.Jet_pt, ascending=False)
    jet_fields = [np.log(a.Jet_pt), a.Jet_eta, a.Jet_phi, a.Jet_mass, a.Jet_btag]
    jets = np.stack(
        [ak.to_numpy(ak.fill_none(ak.pad_none(x[order], 10, clip=True), 0.0)) for x in jet_fields],
        axis=-1,
    ).astype(np.float32)
    jets_mask = np.arange(10) < np.minimum(ak.to_numpy(a.nJet), 10)[:, None]
    counts = ak.to_numpy(ak.num(a.Muon_pt))
    muons = np.stack(
        [ak.to_numpy(ak.flatten(a[f])) for f in ("Muon_pt", "Muon_eta", "Muon_charge")], axis=1
    ).astype(np.float32)
    ht = ak.to_numpy(ak.sum(a.Jet_pt, axis=1))
    scalars = np.stack([ak.to_numpy(a.MET_pt), ak.to_numpy(a.MET_phi), ht], axis=1).astype(
        np.float32
    )
    return {
        "jets": jets,
        "jets_mask": jets_mask,
        "muons": muons,
        "muons_offsets": np.concatenate([[0], np.cumsum(counts)]),
        "scalars": scalars,
        "target": ak.to_numpy(a.label).astype(np.int64),
        "weight": ak.to_numpy(a.weight),
        "run": ak.to_numpy(a.run),
        "event": ak.to_numpy(a.event),
    }


def _child_awkward(p: dict[str, Any]) -> dict[str, Any]:
    _warm_read(p["files"], p["fields"])
    rows = [0]

    def transform(a: Any) -> None:
        rows[0] += len(awkward_transform(a)["target"])

    with TreeMemory() as mem:
        s, n = _timed(lambda: _read_fields(p["files"], p["fields"], transform))
    return {"seconds": s, "events": n, "rows": rows[0], "memory": mem.figures()}


def _fresh(path: str) -> str:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return path


def _convert_demo(p: dict[str, Any], out: str, **how: Any) -> Any:
    """``convert`` of the demo schema over the measurement's files into ``out``; ``how``
    picks the scheduler (``n_workers=``, ``scheduler=``)."""
    from rntensor.convert import convert
    from rntensor.demo import DEMO_SCHEMA

    return convert(DEMO_SCHEMA, p["files"], out, shard_size=p["shard_size"], progress=False, **how)


def _child_convert(p: dict[str, Any]) -> dict[str, Any]:
    """The user's command: a default local cluster, started and stopped inside ``convert``."""
    import distributed  # noqa: F401  (imports are outside every clock, the baseline's too)

    import rntensor.convert
    import rntensor.demo  # noqa: F401

    _warm_read(p["files"], p["fields"])
    out = _fresh(p["out"])

    def run() -> Any:
        return _convert_demo(p, out, n_workers=p["workers"])

    with TreeMemory() as mem:
        s, res = _timed(run)
    again, res2 = _timed(run)  # the same command again: nothing to do
    _fresh(out)
    return {
        "seconds": s,
        "events": res.num_entries,
        "rows": res.num_rows,
        "shards": res.shards_total,
        "bytes_written": res.bytes_written,
        "rerun_seconds": again,
        "rerun_written": res2.shards_written,
        "memory": mem.figures(),
    }


def _warm_worker(files: Sequence[str], fields: Sequence[str]) -> None:
    import pyarrow  # noqa: F401

    import rntensor.convert  # noqa: F401

    _warm_read(files, fields)


def _child_convert_warm(p: dict[str, Any]) -> dict[str, Any]:
    """Conversion on a cluster started (and its workers' imports done) before the clock."""
    import logging

    import rntensor.demo  # noqa: F401  (imported before the clock)

    start, (cluster, client) = _timed(lambda: _start_cluster(p["workers"]))
    try:
        client.run(_warm_worker, p["files"], p["fields"])
        _warm_read(p["files"], p["fields"])
        out = _fresh(p["out"])
        s, res = _timed(lambda: _convert_demo(p, out, scheduler=client))
    finally:
        client.close()
        cluster.close()
        logging.shutdown()
    _fresh(p["out"])
    return {"seconds": s, "events": res.num_entries, "startup_seconds": start}


def _start_cluster(workers: int) -> tuple[Any, Any]:
    """A local cluster of worker processes set up as ``convert --scheduler local-processes``
    sets its own (dask settings, worker environment), and its client."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    from rntensor.convert import _LOCAL_CLUSTER_CONFIG, _WORKER_ENV

    with dask.config.set(_LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
            env=_WORKER_ENV,
        )
    return cluster, Client(cluster)


def _child_convert_stages(p: dict[str, Any]) -> dict[str, Any]:
    """One process, task after task: seconds in read, transform and shard write."""
    from rntensor.cache.write import dest_filesystem, write_shard
    from rntensor.convert import plan
    from rntensor.demo import DEMO_SCHEMA
    from rntensor.transform import column_layout, transform

    _warm_read(p["files"], p["fields"])
    resolved, tasks, _ = plan(DEMO_SCHEMA, p["files"], shard_size=p["shard_size"])
    fs, root = dest_filesystem(_fresh(p["out"]))
    layout = column_layout(resolved)
    t = {"read": 0.0, "transform": 0.0, "write": 0.0}
    n = 0
    for task in tasks:
        a, b = task.entry_start, task.entry_stop
        s, cols = _timed(lambda: task.source.read(resolved.input_fields, a, b))  # noqa: B023
        t["read"] += s
        s, (table, _) = _timed(lambda: transform(resolved, cols, entry_start=a, n_entries=b - a))  # noqa: B023
        t["transform"] += s
        s, _ = _timed(lambda: write_shard(fs, root, task.key, table, layout, record={}))  # noqa: B023
        t["write"] += s
        n += b - a
    _fresh(p["out"])
    return {"events": n, "stages": t, "seconds": sum(t.values())}


def _child_convert_sync(p: dict[str, Any]) -> dict[str, Any]:
    import rntensor.convert
    import rntensor.demo  # noqa: F401

    _warm_read(p["files"], p["fields"])
    out = _fresh(p["out"])
    s, res = _timed(lambda: _convert_demo(p, out, scheduler="synchronous"))
    _fresh(out)
    return {"seconds": s, "events": res.num_entries}


def bench_convert(
    files: Sequence[str],
    workdir: str,
    *,
    repeat: int = 3,
    workers: int = 2,
    shard_size: str = "128 MB",
    skip: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Section A; returns ``{"figures", "memory", "criteria", "params"}``.

    ``skip`` leaves out measurements by key (``uproot``, ``awkward``, ``memcpy``, ``convert``,
    ``convert_warm``, ``convert_sync``, ``stages``); the stage breakdown runs once.
    """
    from rntensor.convert import plan
    from rntensor.demo import DEMO_SCHEMA

    fields = list(plan(DEMO_SCHEMA, files)[0].input_fields)
    out = os.path.join(workdir, "work", "convert-out")
    base = {
        "files": list(files),
        "fields": fields,
        "out": out,
        "workers": workers,
        "shard_size": shard_size,
    }
    names = [
        k
        for k in (
            "uproot",
            "memcpy",
            "awkward",
            "convert",
            "convert_warm",
            "convert_sync",
            "stages",
        )
        if k not in skip
    ]
    samples: dict[str, list[dict[str, Any]]] = {}
    nbytes = None
    for r in range(repeat):
        for name in names:
            if name == "stages" and r > 0:
                continue
            if name == "memcpy":
                if nbytes is None:
                    nbytes = _first(samples.get("uproot", []), "nbytes") or _decompressed_bytes(
                        files, fields
                    )
                res = run_child("memcpy", {"nbytes": nbytes, "events": 0})
            else:
                res = run_child("convert_stages" if name == "stages" else name, base)
            samples.setdefault(name, []).append(res)
            log(f"  [convert {r + 1}/{repeat}] {name}: {_brief(res)}")
    n = _total_entries(files)
    figs: dict[str, dict[str, Any]] = {}
    ref = "uproot" if "uproot" in samples else None
    labels = {
        "uproot": "uproot arrays(), 1 process (read ceiling)",
        "awkward": "awkward transform, 1 process (what users do)",
        "memcpy": "memory copy of the decompressed bytes",
        "convert": f"rntensor convert, default cluster ({workers} in-proc workers), all in",
        "convert_warm": f"rntensor convert, {workers} worker procs (local-processes), excl. start",
        "convert_sync": "rntensor convert, 1 process (synchronous)",
    }
    for key, label in labels.items():
        if key in samples:
            _figure(figs, key, samples, label, n, vs=None if key == ref else ref)
    reruns = [s["rerun_seconds"] for s in samples.get("convert", []) if "rerun_seconds" in s]
    if reruns:
        figs["rerun"] = _make_figure(
            "rntensor convert re-run (nothing to do)", n, reruns, ref, figs
        )
    stage = samples.get("stages", [{}])[0]
    for k, sec in stage.get("stages", {}).items():
        figs[f"stage_{k}"] = _make_figure(
            f"  stage: {k} (1 process, all tasks)", n, [sec], ref, figs
        )
    mem = _median_memory(samples.get("convert", []))
    input_bytes = sum(os.path.getsize(f) for f in files)
    criteria = []
    for key in ("convert",):  # the target is the user's command: the default cluster
        if figs.get(key, {}).get("ratio") is not None:
            criteria.append(
                _criterion(
                    f"{figs[key]['label']} / uproot arrays()", figs[key]["ratio"], 0.7, "x", ">="
                )
            )
    if mem:
        criteria.append(
            _criterion(
                "peak RSS of the whole conversion (process tree)",
                mem["peak_rss_bytes"] / 1e9,
                1.5,
                "GB",
                "<=",
                note=f"input {input_bytes / 1e9:.2f} GB on disk",
            )
        )
    return {
        "params": {
            "events": n,
            "files": len(files),
            "input_bytes": input_bytes,
            "fields": fields,
            "decompressed_bytes": nbytes,
            "workers": workers,
            "shard_size": shard_size,
            "rows_after_selection": _first(samples.get("convert", []), "rows"),
        },
        "figures": figs,
        "memory": {"convert": mem} if mem else {},
        "criteria": criteria,
    }


def _total_entries(files: Sequence[str]) -> int:
    import uproot

    n = 0
    for path in files:
        with uproot.open(path) as f:
            n += int(f["Events"].num_entries)
    return n


def _decompressed_bytes(files: Sequence[str], fields: Sequence[str]) -> int:
    total = [0]
    _read_fields(files, fields, lambda a: total.__setitem__(0, total[0] + a.layout.nbytes))
    return total[0]
