"""Section B: the rntensor DataLoader against ROOT's RDataLoader, a plain loop and a memory copy."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rntensor.bench.data import (
    _BATCH_ROW_BYTES,
    _JET,
    _MUON,
    LOAD_SCHEMA,
    _read_fields,
    prepare_cache,
)
from rntensor.bench.harness import TreeMemory, run_child
from rntensor.bench.report import _brief, _criterion, _figure, _make_figure, _median_memory

__all__ = ["bench_load", "plain_epoch"]


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
            persistent_workers=p["num_workers"] > 0,
            shuffle_buffer=p["shuffle_buffer"],
            masks=p.get("masks", False),
        )

        def epoch(e: int) -> Any:
            loader.set_epoch(e)
            return loader

        out = _epochs(epoch, p, lambda b: len(b["target"]))
        loader.close()
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
    measurements by key (``rdataloader``, ``plain``, ``memcpy``, ``rntensor_w0_masks``).

    The rntensor loaders yield what RDataLoader yields (jets, muons, MET, target:
    ``masks=False``); ``rntensor_w0_masks`` adds the two padded outputs' masks (the default
    of :class:`~rntensor.torch.DataLoader`).
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
    runs += [("rntensor_w0_masks", "rntensor_load", {"num_workers": 0, "masks": True})]
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
            f"rntensor DataLoader, num_workers={w}{', persistent' if w else ''}, warm epoch",
            rows,
            vs=ref,
        )
    label = "rntensor DataLoader, num_workers=0, + masks (14 B/event more)"
    _figure(figs, "rntensor_w0_masks", samples, label, rows, vs=ref)
    _figure(figs, "plain", samples, "uproot + awkward + torch loop, 2nd+ epoch", rows, vs=ref)
    _figure(figs, "memcpy", samples, "memory copy of the batch bytes (machine limit)", rows, vs=ref)
    figs = {k: f for k, f in figs.items() if f["seconds_all"] or f["errors"]}
    buffer_bytes = int(shuffle_buffer * row_bytes)
    memory = {k: m for k in samples if k != "memcpy" and (m := _median_memory(samples[k]))}
    criteria = []
    for w in num_workers:
        f = figs.get(f"rntensor_w{w}", {})
        if f.get("ratio") is not None and w == 0:  # workers: a figure (2 cores: see README)
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
