"""Benchmark inputs: generated RNTuple files and converted caches under ``--workdir``, reused."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["LOAD_SCHEMA", "events_for_bytes", "prepare_cache", "prepare_inputs"]


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
#: bytes of one event in a loader batch (what RDataLoader yields): jets, muons, scalars, target
_BATCH_ROW_BYTES = 10 * 5 * 4 + 4 * 2 * 4 + 2 * 4 + 8


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
