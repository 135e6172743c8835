"""Section C: host-to-device throughput of the loader against a pinned copy (only with CUDA)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rntensor.bench.data import _BATCH_ROW_BYTES, LOAD_SCHEMA, prepare_cache
from rntensor.bench.harness import run_child
from rntensor.bench.load import _epochs
from rntensor.bench.report import _brief, _figure, _make_figure

__all__ = ["bench_gpu"]


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
        masks=False,  # the batch bytes copied above
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
