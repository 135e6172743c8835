"""The benchmark harness shared by ``rntensor bench`` and ``benchmarks/``.

Every figure is a ratio against a baseline measured in the same run on the same data, so the
numbers mean something on any machine and nothing is hard-coded:

* **convert** (A): ``convert(DEMO_SCHEMA, files, out, n_workers=2)`` against uproot's plain
  ``arrays()`` of the fields the schema reads (the read ceiling), the awkward transform a user
  writes today, and a memory copy of the decompressed bytes (the machine limit); peak memory
  of the whole process tree (client, scheduler, nannies, workers).
* **load** (B): a warm, shuffled epoch of :class:`rntensor.torch.DataLoader` (batch 1024)
  against ROOT's ``RDataLoader`` (``load_eager=True``, second epoch), a plain
  uproot + awkward + torch loop and a memory copy of the batch bytes; peak memory above the
  start against the shuffle buffer.
* **gpu** (C): host-to-device throughput of the loader against a pinned copy of the same bytes
  (only with CUDA).

Each measurement runs in a fresh child process (``python -m rntensor.bench --child NAME
PARAMS``) that samples the memory of itself and all its descendants in a thread; repeats are
interleaved (baseline, candidate, baseline, candidate, ...) so machine noise hits all of them
alike, and every figure is the median of ``--repeat`` runs (for loaders, of every timed epoch of
every run).  Generated inputs and caches live
under ``--workdir`` (``.bench/``), keyed by their parameters, and are reused by later runs.

Imports here are light (the CLI imports this module to build its parser); numpy, uproot,
torch, dask and ROOT are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "LOAD_SCHEMA",
    "SECTIONS",
    "SKIPPABLE",
    "TreeMemory",
    "add_arguments",
    "awkward_transform",
    "bench_convert",
    "bench_gpu",
    "bench_load",
    "events_for_bytes",
    "format_table",
    "main",
    "plain_epoch",
    "prepare_cache",
    "prepare_inputs",
    "run_bench",
    "run_child",
]

#: The loading benchmark's schema: jets (10 x 5, sorted by -pt), muons (4 x 2, padded),
#: MET_pt and MET_phi, the class label; no selection, no normalization (as RDataLoader).
LOAD_SCHEMA: dict[str, Any] = {
    "name": "bench-load",
    "tree": "Events",
    "outputs": {
        "jets": {
            "fields": ["Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btag"],
            "length": 10,
            "sort_by": "-Jet_pt",
        },
        "muons": {"fields": ["Muon_pt", "Muon_eta"], "length": 4},
        "scalars": {"fields": ["MET_pt", "MET_phi"]},
    },
    "labels": {"target": {"field": "label", "classes": 2}},
}
_JET = ("pt", "eta", "phi", "mass", "btag")
_MUON = ("pt", "eta")
#: bytes of one event in a loader batch: jets, jets_mask, muons, muons_mask, scalars, target
_BATCH_ROW_BYTES = 10 * 5 * 4 + 10 + 4 * 2 * 4 + 4 + 2 * 4 + 8

_RESULT = "@@rntensor-bench-result@@ "
SECTIONS = ("convert", "load", "gpu")
#: measurements ``--skip`` can leave out
SKIPPABLE = (
    "uproot",
    "awkward",
    "memcpy",
    "convert",
    "convert_warm",
    "convert_sync",
    "stages",
    "rdataloader",
    "plain",
)


# -- memory of a process tree ---------------------------------------------------------------
class TreeMemory:
    """Peak RSS, PSS and anonymous memory summed over a process and its descendants.

    Sampled in a thread.  RSS counts pages shared between processes (libraries, forked memory,
    memory-mapped shards) once per process, so it is the pessimistic figure; PSS splits shared
    pages between their users; anonymous memory (RSS minus file-backed and shared pages) is the
    heap that cannot be reclaimed, without memory-mapped files.

    Args:
        pid: the root of the tree (default: this process).
        interval_s: time between samples; PSS (slower to read) every second sample.
    """

    def __init__(self, pid: int | None = None, *, interval_s: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.interval_s = interval_s
        self.start = {"rss": 0, "pss": 0, "anon": 0}
        self.peak = dict(self.start)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self, *, pss: bool = True) -> dict[str, int]:
        """Current totals over the tree (``pss`` is 0 unless asked: it is slower to read)."""
        import psutil

        out = {"rss": 0, "pss": 0, "anon": 0}
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
        except psutil.Error:
            return out
        for p in procs:
            try:
                m = p.memory_full_info() if pss else p.memory_info()
            except psutil.Error:  # exited between listing and reading
                continue
            out["rss"] += m.rss
            out["anon"] += m.rss - m.shared
            out["pss"] += m.pss if pss else 0
        return out

    def _update(self, now: Mapping[str, int]) -> None:
        for k, v in now.items():
            self.peak[k] = max(self.peak[k], v)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.interval_s):
            i += 1
            self._update(self.sample(pss=i % 2 == 0))

    def __enter__(self) -> TreeMemory:
        self.start = self.sample()
        self.peak = dict(self.start)
        self._thread = threading.Thread(target=self._run, name="rntensor-bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._update(self.sample())
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def figures(self) -> dict[str, int]:
        """``start_<kind>_bytes``, ``peak_<kind>_bytes``, ``peak_<kind>_above_start_bytes``."""
        out = {}
        for k in ("rss", "pss", "anon"):
            out[f"start_{k}_bytes"] = self.start[k]
            out[f"peak_{k}_bytes"] = self.peak[k]
            out[f"peak_{k}_above_start_bytes"] = self.peak[k] - self.start[k]
        return out


# -- inputs ---------------------------------------------------------------------------------
def prepare_inputs(
    workdir: str,
    *,
    n_events: int,
    n_files: int = 4,
    compression: str | None = "zstd",
    seed: int = 0,
    quiet: bool = False,
) -> list[str]:
    """Generated NanoAOD-like RNTuple files under ``workdir/data``, reused when present."""
    from rntensor.datagen import generate_dataset

    name = f"rntuple-{compression or 'none'}-{n_events}ev-{n_files}f-s{seed}"
    folder = os.path.join(workdir, "data", name)
    done = os.path.join(folder, ".complete")
    files = [os.path.join(folder, f"part-{i:05d}.root") for i in range(n_files)]
    if os.path.exists(done) and all(os.path.exists(f) for f in files):
        return files
    if not quiet:
        print(
            f"generating {n_events:,} events in {n_files} files ({compression or 'uncompressed'}) "
            f"under {folder} ...",
            flush=True,
        )
    t = time.perf_counter()
    files = generate_dataset(
        folder,
        n_events=n_events,
        n_files=n_files,
        fmt="rntuple",
        compression=compression,
        seed=seed,
    )
    with open(done, "w") as f:
        json.dump(
            {
                "n_events": n_events,
                "n_files": n_files,
                "compression": compression,
                "seed": seed,
                "seconds": time.perf_counter() - t,
            },
            f,
        )
    return files


def events_for_bytes(target_bytes: int, *, compression: str | None, workdir: str) -> int:
    """How many generated events make ``target_bytes`` of RNTuple (from a 200k-event sample)."""
    sample = prepare_inputs(
        workdir, n_events=200_000, n_files=1, compression=compression, quiet=True
    )
    per_event = os.path.getsize(sample[0]) / 200_000
    return int(target_bytes / per_event) + 1


def prepare_cache(schema: Mapping[str, Any], files: Sequence[str], workdir: str) -> str:
    """The converted cache of ``files`` under ``workdir/cache`` (converted once, then reused)."""
    from rntensor.convert import convert

    data = os.path.basename(os.path.dirname(os.path.abspath(files[0])))
    out = os.path.join(workdir, "cache", f"{schema['name']}-{data}")
    convert(schema, list(files), out, scheduler="threads", n_workers=2, progress=False)
    return out


# -- child processes ------------------------------------------------------------------------
def run_child(name: str, params: Mapping[str, Any], *, timeout_s: float = 3600) -> dict[str, Any]:
    """Run measurement ``name`` in a fresh interpreter; its result dict, or ``{"error": ...}``.

    The child runs in its own session: on a timeout or an interrupt its whole process group
    (Dask workers, DataLoader workers) is killed, so nothing outlives the harness.
    """
    import signal

    cmd = [sys.executable, "-m", "rntensor.bench", "--child", name, json.dumps(dict(params))]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except BaseException as err:  # timeout, Ctrl-C: take the whole tree down
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(err, subprocess.TimeoutExpired):
            return {"error": f"timed out after {timeout_s:.0f} s"}
        raise
    for line in reversed(stdout.splitlines()):
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT) :])
    tail = " | ".join((stderr or stdout).strip().splitlines()[-6:])
    return {"error": f"exit code {proc.returncode}: {tail[-600:]}"}


def _child_main(name: str, params_json: str) -> None:
    params = json.loads(params_json)
    load = os.getloadavg()[0]
    result = _CHILDREN[name](params)
    result["load_avg"] = max(load, os.getloadavg()[0])
    print(_RESULT + json.dumps(result), flush=True)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# -- A: conversion --------------------------------------------------------------------------
def _read_fields(files: Sequence[str], fields: Sequence[str], each: Callable[[Any], Any]) -> int:
    """uproot ``arrays()`` of ``fields``, file after file (one file in memory at a time)."""
    import uproot

    n = 0
    for path in files:
        with uproot.open(path) as f:
            arrays = f["Events"].arrays(list(fields))
        n += len(arrays)
        each(arrays)
    return n


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


def _memcpy(nbytes: int) -> float:
    """Seconds of one copy of ``nbytes`` between warm buffers (median of 3, after a warm-up)."""
    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.ones(nbytes, dtype=np.uint8)
    np.copyto(dst, src)
    return statistics.median(_timed(lambda: np.copyto(dst, src))[0] for _ in range(3))


def _child_memcpy(p: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": _memcpy(int(p["nbytes"])), "bytes": int(p["nbytes"])}


def _fresh(path: str) -> str:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return path


def _child_convert(p: dict[str, Any]) -> dict[str, Any]:
    """The user's command: a default local cluster, started and stopped inside ``convert``."""
    from rntensor.convert import convert
    from rntensor.demo import DEMO_SCHEMA

    _warm_read(p["files"], p["fields"])
    out = _fresh(p["out"])
    with TreeMemory() as mem:
        s, res = _timed(
            lambda: convert(
                DEMO_SCHEMA,
                p["files"],
                out,
                n_workers=p["workers"],
                shard_size=p["shard_size"],
                progress=False,
            )
        )
    again, res2 = _timed(
        lambda: convert(
            DEMO_SCHEMA,
            p["files"],
            out,
            n_workers=p["workers"],
            shard_size=p["shard_size"],
            progress=False,
        )
    )
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

    from rntensor.convert import convert
    from rntensor.demo import DEMO_SCHEMA

    start, (cluster, client) = _timed(lambda: _start_cluster(p["workers"]))
    try:
        client.run(_warm_worker, p["files"], p["fields"])
        _warm_read(p["files"], p["fields"])
        out = _fresh(p["out"])
        s, res = _timed(
            lambda: convert(
                DEMO_SCHEMA,
                p["files"],
                out,
                scheduler=client,
                shard_size=p["shard_size"],
                progress=False,
            )
        )
    finally:
        client.close()
        cluster.close()
        logging.shutdown()
    _fresh(p["out"])
    return {"seconds": s, "events": res.num_entries, "startup_seconds": start}


def _start_cluster(workers: int) -> tuple[Any, Any]:
    """A local cluster configured as ``convert``'s default one, and its client."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
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
    from rntensor.convert import convert
    from rntensor.demo import DEMO_SCHEMA

    _warm_read(p["files"], p["fields"])
    out = _fresh(p["out"])
    s, res = _timed(
        lambda: convert(
            DEMO_SCHEMA,
            p["files"],
            out,
            scheduler="synchronous",
            shard_size=p["shard_size"],
            progress=False,
        )
    )
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
        "convert": f"rntensor convert, default cluster, {workers} threads, all in",
        "convert_warm": f"rntensor convert, {workers} worker procs, excl. start",
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
    for key in ("convert", "convert_warm"):
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


# -- B: loading -----------------------------------------------------------------------------
def _epochs(
    epoch: Callable[[int], Any], p: Mapping[str, Any], rows: Callable[[Any], int]
) -> dict[str, Any]:
    """Time ``1 + p["epochs"]`` passes over ``epoch(e)``; the first is the warm-up."""
    times, events = [], 0
    for e in range(1 + int(p["epochs"])):
        t = time.perf_counter()
        n = 0
        for b in epoch(e):
            n += rows(b)
        times.append(time.perf_counter() - t)
        events = n
    return {
        "seconds": statistics.median(times[1:]),
        "seconds_all": times[1:],
        "first_epoch_seconds": times[0],
        "events": events,
    }


def _child_rntensor_load(p: dict[str, Any]) -> dict[str, Any]:
    import torch  # noqa: F401

    from rntensor.torch import DataLoader

    with TreeMemory() as mem:
        loader = DataLoader(
            p["cache"],
            batch_size=1024,
            shuffle=True,
            seed=1,
            num_workers=p["num_workers"],
            shuffle_buffer=p["shuffle_buffer"],
        )

        def epoch(e: int) -> Any:
            loader.set_epoch(e)
            return loader

        out = _epochs(epoch, p, lambda b: len(b["target"]))
    return {**out, "memory": mem.figures()}


def _rdataframe(files: Sequence[str]) -> tuple[Any, list[str], dict[str, int]]:
    """An RDataFrame over ``files`` with jets sorted by -pt; its columns and vector sizes."""
    import ROOT

    names = ROOT.std.vector("std::string")()
    for f in files:
        names.push_back(f)
    df = ROOT.RDataFrame("Events", names).Define("jet_order", "ROOT::VecOps::Argsort(-Jet_pt)")
    cols, sizes = [], {}
    for f in _JET:
        df = df.Define(f"jet_{f}", f"ROOT::VecOps::Take(Jet_{f}, jet_order)")
        cols.append(f"jet_{f}")
        sizes[f"jet_{f}"] = 10
    for f in _MUON:
        cols.append(f"Muon_{f}")
        sizes[f"Muon_{f}"] = 4
    return df, [*cols, "MET_pt", "MET_phi", "label"], sizes


def _child_rdataloader(p: dict[str, Any]) -> dict[str, Any]:
    import ROOT

    if p.get("implicit_mt"):
        ROOT.EnableImplicitMT(p["implicit_mt"])
    with TreeMemory() as mem:
        df, cols, sizes = _rdataframe(p["files"])
        loader = ROOT.Experimental.ML.RDataLoader(
            df,
            batch_size=1024,
            columns=cols,
            max_vec_sizes=sizes,
            target="label",
            shuffle=True,
            set_seed=1,
            load_eager=True,
            drop_remainder=False,
        )
        out = _epochs(lambda e: loader.as_torch(), p, lambda xy: len(xy[1]))
    return {**out, "memory": mem.figures()}


def plain_epoch(files: Sequence[str], generator: Any) -> Any:
    """One epoch of the plain loop: read every file, pad with awkward, shuffle, batch."""
    import awkward as ak
    import numpy as np
    import torch

    parts: dict[str, list[Any]] = {}

    def padded(a: Any, prefix: str, fields: Sequence[str], length: int, order: Any) -> None:
        cols = [a[f"{prefix}_{f}"] if order is None else a[f"{prefix}_{f}"][order] for f in fields]
        x = np.stack(
            [ak.to_numpy(ak.fill_none(ak.pad_none(c, length, clip=True), 0.0)) for c in cols], -1
        )
        mask = np.arange(length) < np.minimum(ak.to_numpy(ak.num(cols[0])), length)[:, None]
        name = "jets" if prefix == "Jet" else "muons"
        parts.setdefault(name, []).append(x.astype(np.float32))
        parts.setdefault(f"{name}_mask", []).append(mask)

    def each(a: Any) -> None:
        padded(a, "Jet", _JET, 10, ak.argsort(a.Jet_pt, ascending=False))
        padded(a, "Muon", _MUON, 4, None)
        parts.setdefault("scalars", []).append(
            np.stack([ak.to_numpy(a.MET_pt), ak.to_numpy(a.MET_phi)], 1).astype(np.float32)
        )
        parts.setdefault("target", []).append(ak.to_numpy(a.label).astype(np.int64))

    fields = (
        [f"Jet_{f}" for f in _JET] + [f"Muon_{f}" for f in _MUON] + ["MET_pt", "MET_phi", "label"]
    )
    n = _read_fields(files, fields, each)
    data = {k: torch.from_numpy(np.concatenate(v)) for k, v in parts.items()}
    parts.clear()
    perm = torch.randperm(n, generator=generator)
    for i in range(0, n, 1024):
        idx = perm[i : i + 1024]
        yield {k: v[idx] for k, v in data.items()}


def _child_plain_loop(p: dict[str, Any]) -> dict[str, Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    with TreeMemory() as mem:
        out = _epochs(lambda e: plain_epoch(p["files"], g), p, lambda b: len(b["target"]))
    return {**out, "memory": mem.figures()}


def bench_load(
    files: Sequence[str],
    workdir: str,
    *,
    repeat: int = 3,
    epochs: int = 3,
    num_workers: Sequence[int] = (0, 2),
    shuffle_buffer: int = 65536,
    implicit_mt: int = 0,
    skip: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Section B; returns ``{"figures", "memory", "criteria", "params"}``.

    Every loader runs in its own process: one warm-up epoch, then ``epochs`` timed ones;
    figures are medians over all timed epochs of all ``repeat`` runs.  ``skip`` leaves out
    measurements by key (``rdataloader``, ``plain``, ``memcpy``).
    """
    from rntensor.cache.read import open_cache

    cache = prepare_cache(LOAD_SCHEMA, files, workdir)
    reader = open_cache(cache)
    rows = reader.num_rows
    cache_bytes = sum(int(s["bytes"]) for s in reader.shards)
    largest_shard = max(int(s["bytes"]) for s in reader.shards)
    reader.close()
    row_bytes = cache_bytes / max(rows, 1)
    base = {
        "files": list(files),
        "cache": cache,
        "shuffle_buffer": shuffle_buffer,
        "implicit_mt": implicit_mt,
        "epochs": epochs,
    }
    runs = [(f"rntensor_w{w}", "rntensor_load", {"num_workers": w}) for w in num_workers]
    runs += [
        ("rdataloader", "rdataloader", {}),
        ("plain", "plain_loop", {}),
        ("memcpy", "memcpy", {"nbytes": rows * _BATCH_ROW_BYTES, "events": rows}),
    ]
    runs = [r for r in runs if r[0] not in skip]
    samples: dict[str, list[dict[str, Any]]] = {}
    for r in range(repeat):
        for name, child, extra in runs:
            res = run_child(child, {**base, **extra})
            samples.setdefault(name, []).append(res)
            log(f"  [load {r + 1}/{repeat}] {name}: {_brief(res)}")
    figs: dict[str, dict[str, Any]] = {}
    ref = "rdataloader" if "rdataloader" in samples else None
    if ref:
        _figure(figs, "rdataloader", samples, "ROOT RDataLoader, load_eager, 2nd+ epoch", rows)
        firsts = [s["first_epoch_seconds"] for s in samples[ref] if "first_epoch_seconds" in s]
        loads = [s["load_avg"] for s in samples[ref] if "load_avg" in s]
        label = "ROOT RDataLoader, 1st epoch (eager load)"
        figs["rdataloader_first"] = _make_figure(label, rows, firsts, ref, figs, load_avg=loads)
    for w in num_workers:
        _figure(
            figs,
            f"rntensor_w{w}",
            samples,
            f"rntensor DataLoader, num_workers={w}, warm epoch",
            rows,
            vs=ref,
        )
    _figure(figs, "plain", samples, "uproot + awkward + torch loop, 2nd+ epoch", rows, vs=ref)
    _figure(figs, "memcpy", samples, "memory copy of the batch bytes (machine limit)", rows, vs=ref)
    figs = {k: f for k, f in figs.items() if f["seconds_all"] or f["errors"]}
    buffer_bytes = int(shuffle_buffer * row_bytes)
    memory = {k: m for k in samples if k != "memcpy" and (m := _median_memory(samples[k]))}
    criteria = []
    for w in num_workers:
        f = figs.get(f"rntensor_w{w}", {})
        if f.get("ratio") is not None:
            criteria.append(_criterion(f"{f['label']} / RDataLoader", f["ratio"], 2.0, "x", ">="))
        mw = memory.get(f"rntensor_w{w}")
        if mw:
            criteria.append(
                _criterion(
                    f"peak PSS above start, num_workers={w} (process tree)",
                    mw["peak_pss_above_start_bytes"] / 1e9,
                    (buffer_bytes + 500e6) / 1e9,
                    "GB",
                    "<=",
                    note=f"shuffle buffer {buffer_bytes / 1e6:.0f} MB + 500 MB; dataset {cache_bytes / 1e6:.0f} MB",
                )
            )
    return {
        "params": {
            "events": rows,
            "files": len(files),
            "cache": cache,
            "cache_bytes": cache_bytes,
            "row_bytes": row_bytes,
            "batch_row_bytes": _BATCH_ROW_BYTES,
            "epochs": epochs,
            "shuffle_buffer_events": shuffle_buffer,
            "shuffle_buffer_bytes": buffer_bytes,
            "largest_shard_bytes": largest_shard,
            "implicit_mt": implicit_mt,
        },
        "figures": figs,
        "memory": memory,
        "criteria": criteria,
    }


# -- C: GPU ---------------------------------------------------------------------------------
def _child_gpu(p: dict[str, Any]) -> dict[str, Any]:
    """Pinned and pageable host-to-device copies of the batch bytes, then loader epochs."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    out: dict[str, Any] = {"device": torch.cuda.get_device_name()}
    if p.get("probe"):
        return out
    from rntensor.torch import DataLoader

    nbytes = int(p["events"]) * _BATCH_ROW_BYTES
    dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    for name, host in (
        ("h2d_pinned", torch.ones(nbytes, dtype=torch.uint8).pin_memory()),
        ("h2d_pageable", torch.ones(nbytes, dtype=torch.uint8)),
    ):
        dev.copy_(host, non_blocking=True)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        dev.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        out[f"{name}_seconds"] = time.perf_counter() - t
    del dev
    loader = DataLoader(
        p["cache"],
        batch_size=1024,
        shuffle=True,
        seed=1,
        num_workers=p["num_workers"],
        device="cuda",
        pin_memory=True,
    )

    def epoch(e: int) -> Any:
        loader.set_epoch(e)
        yield from loader
        torch.cuda.synchronize()

    return {**out, **_epochs(epoch, p, lambda b: len(b["target"]))}


def bench_gpu(
    files: Sequence[str],
    workdir: str,
    *,
    repeat: int = 3,
    epochs: int = 3,
    num_workers: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Section C; ``{"skipped": "no CUDA device"}`` (after a cheap probe) without CUDA."""
    probe = run_child("gpu", {"probe": True})
    if "skipped" in probe or "error" in probe:
        log(f"  gpu: {_brief(probe)}")
        return probe
    cache = prepare_cache(LOAD_SCHEMA, files, workdir)
    from rntensor.cache.read import open_cache

    reader = open_cache(cache)
    events = reader.num_rows
    reader.close()
    base = {"cache": cache, "events": events, "num_workers": num_workers, "epochs": epochs}
    samples = []
    for r in range(repeat):
        res = run_child("gpu", base)
        samples.append(res)
        log(f"  [gpu {r + 1}/{repeat}] {_brief(res)}")
    ok = [s for s in samples if "error" not in s]
    figs: dict[str, dict[str, Any]] = {}
    for key, label in (
        ("h2d_pinned", "host-to-device copy of the batch bytes, pinned"),
        ("h2d_pageable", "host-to-device copy of the batch bytes, pageable"),
    ):
        figs[key] = _make_figure(label, events, [s[f"{key}_seconds"] for s in ok], None, figs)
    _figure(
        figs,
        "loader_cuda",
        {"loader_cuda": samples},
        f"rntensor DataLoader -> cuda, pin_memory, num_workers={num_workers}",
        events,
        vs="h2d_pinned",
    )
    return {
        "params": {"events": events, "device": probe["device"]},
        "figures": figs,
        "memory": {},
        "criteria": [],
    }


# -- figures --------------------------------------------------------------------------------
def _brief(res: Mapping[str, Any]) -> str:
    if "error" in res:
        return f"error: {res['error']}"
    if "skipped" in res:
        return f"skipped: {res['skipped']}"
    s = res.get("seconds")
    return f"{s:.2f} s" if isinstance(s, float) else "ok"


def _first(samples: Sequence[Mapping[str, Any]], key: str) -> Any:
    return next((s[key] for s in samples if key in s), None)


def _make_figure(
    label: str,
    events: int,
    seconds: Sequence[float],
    vs: str | None,
    figs: Mapping[str, Mapping[str, Any]],
    errors: Sequence[str] = (),
    load_avg: Sequence[float] = (),
) -> dict[str, Any]:
    """One row: median (and best) seconds and events/s, and the ratio to figure ``vs``."""
    med = statistics.median(seconds) if seconds else None
    best = min(seconds) if seconds else None
    eps = events / med if med else None
    base = figs.get(vs or "", {})
    ratio = eps / base["events_per_s"] if eps and base.get("events_per_s") else None
    best_ratio = (
        (events / best) / base["best_events_per_s"]
        if best and base.get("best_events_per_s")
        else None
    )
    return {
        "label": label,
        "events": events,
        "seconds": med,
        "seconds_all": list(seconds),
        "events_per_s": eps,
        "best_events_per_s": events / best if best else None,
        "vs": vs,
        "ratio": ratio,
        "best_ratio": best_ratio,
        "errors": list(errors),
        "load_avg": statistics.median(load_avg) if load_avg else None,
    }


def _figure(
    figs: dict[str, Any],
    key: str,
    samples: Mapping[str, Sequence[Mapping[str, Any]]],
    label: str,
    events: int,
    *,
    vs: str | None = None,
) -> None:
    got = samples.get(key, [])
    secs = [x for s in got if "seconds" in s for x in s.get("seconds_all", [s["seconds"]])]
    figs[key] = _make_figure(
        label,
        events,
        secs,
        vs,
        figs,
        [s["error"] for s in got if "error" in s],
        [s["load_avg"] for s in got if "load_avg" in s],
    )


def _median_memory(samples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    mems = [s["memory"] for s in samples if "memory" in s]
    if not mems:
        return {}
    return {k: statistics.median(m[k] for m in mems) for k in mems[0]}


def _criterion(
    what: str, value: float, target: float, unit: str, op: str, note: str = ""
) -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {
        "what": what,
        "value": value,
        "target": target,
        "unit": unit,
        "op": op,
        "met": met,
        "note": note,
    }


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None else format(x, fmt)


def format_table(results: Mapping[str, Any]) -> str:
    """The printed report: one row per figure, its baseline and ratio; memory; the targets.

    ``events/s`` and ``ratio`` come from median times, ``best`` from the fastest run; ``load``
    is the machine's 1-minute load average during the runs (above the CPU count, other work
    competed for the cores and the ratios are less trustworthy).
    """
    m = results.get("machine", {})
    lines = [
        f"rntensor bench, {m.get('date', '')}, {m.get('cpus', '?')} CPUs, {m.get('memory_gb', 0):.0f} GB, "
        f"python {m.get('python', '')}; medians of {results.get('repeat')} runs"
    ]
    for section in SECTIONS:
        sec = results.get(section)
        if sec is None:
            continue
        lines.append("")
        if "skipped" in sec or "error" in sec:
            what = f"skipped: {sec['skipped']}" if "skipped" in sec else f"error: {sec['error']}"
            lines.append(f"[{section}] {what}")
            continue
        lines.append(f"[{section}] {sec.get('params', {}).get('events', 0):,} events")
        lines.append(
            f"  {'measurement':<54}{'events/s':>12}{'best':>12}{'median s':>10}{'load':>6}"
            f"  {'vs':<14}{'ratio':>9}{'best':>9}"
        )
        figs = sec["figures"]
        for f in figs.values():
            vs = figs[f["vs"]]["label"].split(",")[0][:13] if f.get("vs") in figs else ""
            ratio = f"{f['ratio']:.2f}x" if f.get("ratio") is not None else ""
            best = f"{f['best_ratio']:.2f}x" if f.get("best_ratio") is not None else ""
            err = (
                f"  ({len(f['errors'])} failed: {f['errors'][0][:100]})" if f.get("errors") else ""
            )
            lines.append(
                f"  {f['label']:<54}{_num(f['events_per_s']):>12}{_num(f['best_events_per_s']):>12}"
                f"{_num(f['seconds'], '.3f'):>10}{_num(f.get('load_avg'), '.1f'):>6}  {vs:<14}"
                f"{ratio:>9}{best:>9}{err}"
            )
        for name, mem in sec.get("memory", {}).items():
            parts = [
                f"{k.upper()} {mem[f'peak_{k}_bytes'] / 1e6:,.0f} MB (+{mem[f'peak_{k}_above_start_bytes'] / 1e6:,.0f})"
                for k in ("rss", "pss", "anon")
            ]
            lines.append(f"  peak memory {name:<14} " + ", ".join(parts))
        for c in sec.get("criteria", []):
            note = f"; {c['note']}" if c.get("note") else ""
            lines.append(
                f"  target: {c['what']}: {c['value']:.2f} {c['unit']} (want {c['op']} "
                f"{c['target']:.2f} {c['unit']}{note}): {'met' if c['met'] else 'NOT met'}"
            )
    return "\n".join(lines)


# -- entry points ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rntensor bench`` (and of ``python -m rntensor.bench``)."""
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="generated events (default 1000000)"
    )
    parser.add_argument("--files", type=int, default=4, help="input files (default 4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per measurement; figures are medians (default 3)",
    )
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only this section (repeatable; default: all)",
    )
    parser.add_argument(
        "--workdir", default=".bench", help="generated data, caches and scratch (default ./.bench)"
    )
    parser.add_argument(
        "--json", metavar="OUT", default=None, help="also write every figure to this JSON file"
    )
    parser.add_argument(
        "--input-compression",
        choices=["zstd", "none"],
        default="zstd",
        help="compression of the generated RNTuple files (default zstd)",
    )
    parser.add_argument(
        "--input-gb",
        type=float,
        default=None,
        help="size the input to this many GB on disk instead of --events (e.g. 5)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Dask workers for the conversion (default 2)"
    )
    parser.add_argument(
        "--shard-size", default="128 MB", help="conversion shard size (default 128 MB)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        action="append",
        default=None,
        help="DataLoader workers to measure (repeatable; default 0 and 2)",
    )
    parser.add_argument(
        "--shuffle-buffer", type=int, default=65536, help="loader shuffle buffer, events"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KEY",
        help="leave out a measurement (repeatable): uproot, awkward, memcpy, convert, "
        "convert_warm, convert_sync, stages, rdataloader, plain",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed epochs per loader run, after a warm-up (default 3)",
    )


def _machine() -> dict[str, Any]:
    import psutil

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "memory_gb": psutil.virtual_memory().total / 1e9,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections, print the table, optionally write ``--json``; return the results."""
    for name in ("events", "files", "repeat", "workers", "epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    unknown = sorted(set(args.skip or ()) - set(SKIPPABLE))
    if unknown:
        raise ValueError(
            f"--skip {unknown[0]!r} is not a measurement; use one of {', '.join(SKIPPABLE)}"
        )
    sections = args.only or list(SECTIONS)
    workdir = os.path.abspath(args.workdir)
    compression = None if args.input_compression == "none" else args.input_compression
    n_events = args.events
    if args.input_gb:
        n_events = events_for_bytes(
            int(args.input_gb * 1e9), compression=compression, workdir=workdir
        )
        print(
            f"{args.input_gb:g} GB of {args.input_compression} RNTuple is about {n_events:,} events",
            flush=True,
        )
    files = prepare_inputs(workdir, n_events=n_events, n_files=args.files, compression=compression)
    results: dict[str, Any] = {
        "machine": _machine(),
        "repeat": args.repeat,
        "workdir": workdir,
        "inputs": {
            "files": files,
            "bytes": sum(os.path.getsize(f) for f in files),
            "compression": args.input_compression,
        },
    }
    num_workers = args.num_workers or [0, 2]

    def log(msg: str) -> None:
        print(msg, flush=True)

    if "convert" in sections:
        log("[convert] measuring ...")
        results["convert"] = bench_convert(
            files,
            workdir,
            repeat=args.repeat,
            workers=args.workers,
            shard_size=args.shard_size,
            skip=args.skip,
            log=log,
        )
    if "load" in sections:
        log("[load] measuring ...")
        results["load"] = bench_load(
            files,
            workdir,
            repeat=args.repeat,
            epochs=args.epochs,
            num_workers=num_workers,
            shuffle_buffer=args.shuffle_buffer,
            skip=args.skip,
            log=log,
        )
    if "gpu" in sections:
        log("[gpu] measuring ...")
        results["gpu"] = bench_gpu(
            files,
            workdir,
            repeat=args.repeat,
            epochs=args.epochs,
            num_workers=max(num_workers),
            log=log,
        )
    results["machine"]["load_avg_end"] = os.getloadavg()[0]
    print()
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.json}")
    return results


_CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "uproot": _child_uproot,
    "awkward": _child_awkward,
    "memcpy": _child_memcpy,
    "convert": _child_convert,
    "convert_warm": _child_convert_warm,
    "convert_sync": _child_convert_sync,
    "convert_stages": _child_convert_stages,
    "rntensor_load": _child_rntensor_load,
    "rdataloader": _child_rdataloader,
    "plain_loop": _child_plain_loop,
    "gpu": _child_gpu,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rntensor.bench [options]`` (same options as ``rntensor bench``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _child_main(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m rntensor.bench", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    run_bench(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
