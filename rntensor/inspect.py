"""``rntensor inspect``: what is in a ROOT file, or in a converted dataset."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rntensor.cache import MANIFEST_NAME
from rntensor.cache.write import dest_filesystem, load_manifest
from rntensor.errors import SourceError
from rntensor.sources import open_source, split_spec, uproot_options

__all__ = ["describe_dataset", "describe_file", "inspect_path"]


def describe_file(spec: str, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Objects of a ROOT file and, for each TTree/RNTuple, its fields, entries and clusters."""
    import uproot

    url, obj = split_spec(spec)
    try:
        f = uproot.open(url, **uproot_options(url, storage_options))
    except FileNotFoundError as err:
        raise SourceError(f"file not found: {url}; check the path") from err
    except Exception:
        _ = open_source(url, storage_options=storage_options).num_entries  # raises a SourceError
        raise
    with f:
        objects = {k.split(";")[0]: v for k, v in f.classnames().items()}
    trees = [obj] if obj else [k for k, v in objects.items() if v == "TTree" or "RNTuple" in v]
    out: dict[str, Any] = {"file": url, "objects": objects, "trees": {}}
    for name in trees:
        src = open_source(url, tree=name, storage_options=storage_options)
        starts = src.cluster_starts()
        out["trees"][name] = {
            "kind": src.kind,
            "entries": src.num_entries,
            "clusters": max(0, len(starts) - 1),
            "cluster_starts": starts[:-1][:20],
            "fields": {
                p: {
                    "dtype": fi.dtype,
                    "jagged": fi.jagged,
                    "collection": fi.collection,
                    "supported": fi.supported,
                    **({"type": fi.typename} if fi.typename else {}),
                }
                for p, fi in src.fields.items()
            },
        }
        src.close()
    return out


def describe_dataset(
    path: str, *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The manifest summary of a converted dataset, or ``None`` if ``path`` holds none."""
    fs, root = dest_filesystem(path, storage_options)
    manifest = load_manifest(fs, root)
    if manifest is None:
        return None
    shards = manifest.get("shards", [])
    return {
        "dataset": path,
        "format_version": manifest.get("format_version"),
        "created_by": manifest.get("created_by"),
        "schema": manifest.get("schema", {}).get("name"),
        "schema_fingerprint": manifest.get("schema_fingerprint"),
        "rows": manifest.get("num_rows"),
        "shards": len(shards),
        "bytes": sum(s.get("bytes", 0) for s in shards),
        "sources": sorted({s["source"]["name"] for s in shards}),
        "columns": {
            k: {"kind": v["kind"], "shape": v["shape"], "dtype": v["dtype"]}
            for k, v in manifest.get("columns", {}).items()
        },
        "stats": manifest.get("stats", {}),
        "failures": manifest.get("failures", []),
    }


def inspect_path(
    path: str, *, storage_options: Mapping[str, Any] | None = None, as_json: bool = False
) -> str:
    """Text (or JSON) describing a ROOT file or a dataset."""
    url, _ = split_spec(path)
    is_root = url.endswith(".root")
    info = None if is_root else describe_dataset(path, storage_options=storage_options)
    if info is None:
        if not is_root and not url.endswith(".root"):
            try:
                info = describe_file(path, storage_options=storage_options)
            except SourceError as err:
                raise SourceError(
                    f"{path} is neither a dataset (no {MANIFEST_NAME}) nor a readable ROOT file: {err.message}"
                ) from err
        else:
            info = describe_file(path, storage_options=storage_options)
    if as_json:
        return json.dumps(info, indent=1)
    return _format_dataset(info) if "dataset" in info else _format_file(info)


def _format_file(info: dict[str, Any]) -> str:
    lines = [f"file {info['file']}"]
    for k, v in info["objects"].items():
        lines.append(f"  {k}: {v}")
    for name, t in info["trees"].items():
        lines.append(f"\n{t['kind']} {name!r}: {t['entries']} entries in {t['clusters']} clusters")
        width = max((len(p) for p in t["fields"]), default=0)
        for p, f in t["fields"].items():
            shape = f"var * {f['dtype']}" if f["jagged"] else f["dtype"]
            extra = f"  [{f['collection']}]" if f["jagged"] else ""
            if not f["supported"]:
                extra += "  (not convertible: " + f.get("type", "?") + ")"
            lines.append(f"  {p:<{width}}  {shape}{extra}")
    return "\n".join(lines)


def _format_dataset(info: dict[str, Any]) -> str:
    lines = [
        f"dataset {info['dataset']} (format {info['format_version']}, {info['created_by']})",
        f"  schema {info['schema']!r} fingerprint {info['schema_fingerprint']}",
        f"  {info['rows']} rows in {info['shards']} shards, {info['bytes'] / 1e6:.1f} MB, from {len(info['sources'])} source files",
        "  columns:",
    ]
    for k, v in info["columns"].items():
        lines.append(f"    {k:<16} {v['kind']:<7} {v['dtype']:<8} {v['shape']}")
    if info["stats"]:
        lines.append("  statistics:")
        for out, fields in info["stats"].items():
            for f, s in fields.items():
                lines.append(
                    f"    {out}.{f:<14} count {s['count']:<10} mean {s['mean']:<11.4g} std {s['std']:<11.4g} min {s['min']:<11.4g} max {s['max']:.4g}"
                )
    if info["failures"]:
        lines.append(f"  failures ({len(info['failures'])}):")
        for f in info["failures"]:
            lines.append(
                f"    {f['source']} {f.get('entry_start')}-{f.get('entry_stop')}: {f['error']}"
            )
    return "\n".join(lines)
