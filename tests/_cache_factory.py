"""Write small synthetic caches that follow rntensor/cache/FORMAT.md, with pyarrow only.

Values encode where each row came from, so tests can check that a batch holds the right rows:

* ``scalars[:, 0] == _entry``, ``scalars[:, 1] == source index`` (position in ``sources``),
  ``scalars[:, 2]`` random;
* ``jets[i, j, 0] == _entry`` for real objects (``j < njets``), pad value elsewhere; the other
  jet features are random normals with a per-feature offset (so normalization is visible);
* ``muons`` ragged: ``n_mu = _entry % 4`` objects with ``muons[..., 0] == _entry``;
* ``target = _entry % classes``; ``weight = 1 + (_entry % 3)``; ``run == source index``.

A fake "selection" drops rows whose entry is a multiple of 7, so ``_entry`` has gaps.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import xxhash

FINGERPRINT = "synthetic0000001"


def _rows(
    source_index: int,
    name: str,
    entry_start: int,
    entry_stop: int,
    *,
    jets_len: int,
    classes: int,
    seed: int,
) -> dict[str, np.ndarray]:
    entries = np.arange(entry_start, entry_stop, dtype=np.int64)
    entries = entries[entries % 7 != 0]
    n = len(entries)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), entry_start])
    njets = (entries * 7 + source_index) % (jets_len + 1)
    jets = rng.normal(size=(n, jets_len, 5)).astype(np.float32)
    jets += np.arange(5, dtype=np.float32) * 10.0
    jets[:, :, 0] = entries[:, None]
    mask = np.arange(jets_len)[None, :] < njets[:, None]
    jets[~mask] = 0.0
    n_mu = entries % 4
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_mu, out=offsets[1:])
    muons = rng.normal(size=(int(offsets[-1]), 3)).astype(np.float32)
    muons[:, 0] = np.repeat(entries, n_mu)
    scalars = np.stack(
        [
            entries.astype(np.float32),
            np.full(n, source_index, np.float32),
            rng.normal(size=n).astype(np.float32),
        ],
        axis=1,
    )
    return {
        "jets": jets,
        "jets_mask": mask,
        "muons": muons,
        "muons_offsets": offsets,
        "scalars": scalars,
        "target": entries % classes,
        "weight": (1 + entries % 3).astype(np.float32),
        "run": np.full(n, source_index, np.int64),
        "_entry": entries,
    }


def _table(d: dict[str, np.ndarray]) -> pa.Table:
    def fsl(a: np.ndarray) -> pa.Array:
        n = a.shape[0]
        size = int(np.prod(a.shape[1:]))
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(n * size)), size)

    f = d["muons"].shape[1]
    mu_values = pa.FixedSizeListArray.from_arrays(pa.array(d["muons"].reshape(-1)), f)
    return pa.table(
        {
            "jets": fsl(d["jets"]),
            "jets_mask": fsl(d["jets_mask"].astype(np.uint8)),
            "muons": pa.LargeListArray.from_arrays(pa.array(d["muons_offsets"]), mu_values),
            "scalars": fsl(d["scalars"]),
            "target": pa.array(d["target"]),
            "weight": pa.array(d["weight"]),
            "run": pa.array(d["run"]),
            "_entry": pa.array(d["_entry"]),
        }
    )


def _stats(parts: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    def one(x: np.ndarray) -> dict[str, float]:
        x = x.astype(np.float64)
        c, s, ss = len(x), float(x.sum()), float((x * x).sum())
        mean = s / c if c else 0.0
        std = float(np.sqrt(max(ss / c - mean * mean, 0.0))) if c else 0.0
        return {
            "count": c,
            "sum": s,
            "sumsq": ss,
            "mean": mean,
            "std": std,
            "min": float(x.min()) if c else 0.0,
            "max": float(x.max()) if c else 0.0,
        }

    jets = np.concatenate([p["jets"][p["jets_mask"]] for p in parts])
    muons = np.concatenate([p["muons"] for p in parts])
    scal = np.concatenate([p["scalars"] for p in parts])
    return {
        "jets": {f"j{k}": one(jets[:, k]) for k in range(5)},
        "muons": {f"m{k}": one(muons[:, k]) for k in range(3)},
        "scalars": {f"s{k}": one(scal[:, k]) for k in range(3)},
    }


def write_cache(
    dest: str | os.PathLike[str],
    sources: Sequence[tuple[str, int]] = (
        ("run1.root", 300),
        ("run2.root", 200),
        ("run3.root", 157),
    ),
    *,
    shard_entries: int = 64,
    jets_len: int = 10,
    classes: int = 3,
    jets_normalize: str = "standard",
    compression: str | None = None,
    format_version: int = 1,
    schema_fingerprint: str = FINGERPRINT,
    seed: int = 0,
    shard_order: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Write a cache of ``sources`` (name, entries) cut into ``shard_entries`` ranges.

    ``shard_order`` permutes the manifest's shard list (readers must not depend on it).
    Returns the manifest.
    """
    dest = os.fspath(dest)
    os.makedirs(os.path.join(dest, "shards"), exist_ok=True)
    shards: list[dict[str, Any]] = []
    parts = []
    options = ipc.IpcWriteOptions(compression=compression) if compression else None
    for si, (name, entries) in enumerate(sources):
        for start in range(0, entries, shard_entries):
            stop = min(start + shard_entries, entries)
            d = _rows(si, name, start, stop, jets_len=jets_len, classes=classes, seed=seed)
            parts.append(d)
            table = _table(d)
            fp = {"size": entries, "mtime": 1.0}
            key = hashlib.sha256(
                json.dumps(
                    [name, "Events", fp, start, stop, schema_fingerprint, format_version],
                    sort_keys=True,
                    separators=(",", ":"),
                ).encode()
            ).hexdigest()[:32]
            rel = f"shards/{key}.arrow"
            path = os.path.join(dest, rel)
            with ipc.new_file(path, table.schema, options=options) as w:
                w.write_table(table)
            with open(path, "rb") as f:
                digest = xxhash.xxh64(f.read()).hexdigest()
            shards.append(
                {
                    "path": rel,
                    "key": key,
                    "rows": table.num_rows,
                    "bytes": os.path.getsize(path),
                    "source": {
                        "url": f"/data/{name}",
                        "name": name,
                        "tree": "Events",
                        "kind": "TTree",
                        "fingerprint": fp,
                    },
                    "entry_start": start,
                    "entry_stop": stop,
                    "entries_read": stop - start,
                    "checksum": f"xxh64:{digest}",
                }
            )
    if shard_order is not None:
        shards = [shards[i] for i in shard_order]
    manifest = {
        "format_version": format_version,
        "created_by": "tests/_cache_factory.py",
        "schema": {
            "name": "synthetic",
            "outputs": {
                "jets": {
                    "fields": [f"j{k}" for k in range(5)],
                    "length": jets_len,
                    "ragged": False,
                    "pad_value": 0.0,
                    "sort_by": None,
                    "normalize": jets_normalize,
                    "dtype": "float32",
                },
                "muons": {
                    "fields": ["m0", "m1", "m2"],
                    "length": None,
                    "ragged": True,
                    "pad_value": 0.0,
                    "sort_by": None,
                    "normalize": "none",
                    "dtype": "float32",
                },
                "scalars": {
                    "fields": ["s0", "s1", "s2"],
                    "length": None,
                    "ragged": False,
                    "pad_value": 0.0,
                    "sort_by": None,
                    "normalize": "none",
                    "dtype": "float32",
                },
            },
            "labels": {"target": {"field": "t", "classes": classes, "dtype": "int64"}},
            "weights": "w",
            "keep": ["run"],
        },
        "schema_fingerprint": schema_fingerprint,
        "columns": {
            "jets": {
                "kind": "padded",
                "shape": [jets_len, 5],
                "dtype": "float32",
                "fields": [f"j{k}" for k in range(5)],
                "normalize": jets_normalize,
            },
            "jets_mask": {"kind": "mask", "shape": [jets_len], "dtype": "bool", "of": "jets"},
            "muons": {
                "kind": "ragged",
                "shape": [3],
                "dtype": "float32",
                "fields": ["m0", "m1", "m2"],
                "normalize": "none",
            },
            "scalars": {
                "kind": "flat",
                "shape": [3],
                "dtype": "float32",
                "fields": ["s0", "s1", "s2"],
                "normalize": "none",
            },
            "target": {"kind": "label", "shape": [], "dtype": "int64", "classes": classes},
            "weight": {"kind": "weight", "shape": [], "dtype": "float32"},
            "run": {"kind": "keep", "shape": [], "dtype": "int64"},
            "_entry": {"kind": "entry", "shape": [], "dtype": "int64"},
        },
        "shards": shards,
        "failures": [],
        "stats": _stats(parts),
        "num_rows": sum(s["rows"] for s in shards),
    }
    with open(os.path.join(dest, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def expected_rows(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """Every (source name, entry) of a cache written by :func:`write_cache`."""
    out = []
    for s in manifest["shards"]:
        e = np.arange(s["entry_start"], s["entry_stop"])
        out += [(s["source"]["name"], int(x)) for x in e[e % 7 != 0]]
    return out


def copy_to_memory(path: str, prefix: str) -> str:
    """Copy a cache folder into fsspec's in-memory filesystem; returns its ``memory://`` URL
    (a remote store for the read-through tests; forked workers inherit it)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for root, _, files in os.walk(path):
        for name in files:
            src = os.path.join(root, name)
            with open(src, "rb") as f:
                fs.pipe_file(f"{prefix}/{os.path.relpath(src, path)}", f.read())
    return f"memory://{prefix}"
