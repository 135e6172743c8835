"""A starter schema for a file: what ``rntensor schema init FILE.root[:TREE]`` writes.

Every supported per-event field goes into one flat output ``scalars`` (bookkeeping fields
such as ``run`` and ``event`` into ``keep``, a ``weight`` field into ``weights``, a
``label``/``target`` field into ``labels``); every collection of jagged fields becomes a
padded output named after it, in lower case, whose length is the 95th percentile of objects
per event over the first entries.  Fields rntensor cannot turn into tensors are listed as
YAML comments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from rntensor.errors import SchemaError
from rntensor.schema.load import load_schema
from rntensor.sources import Jagged, Source, open_source

__all__ = ["starter_schema", "starter_yaml"]

_KEEP = ("run", "luminosityBlock", "lumi", "event")
_WEIGHTS = ("weight", "genWeight", "weights")
_LABELS = ("label", "target", "labels", "y")
_MAX_CLASSES = 1000


def starter_schema(
    source: Source | str,
    *,
    max_entries: int = 100_000,
    percentile: float = 95.0,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A schema dict (see :func:`rntensor.schema.load_schema`) covering every field of
    ``source`` (a :class:`~rntensor.sources.Source` or ``"FILE.root[:TREE]"``).

    Args:
        source: the input to describe.
        max_entries: entries read (from the start) to size padded outputs and count classes.
        percentile: padded length = this percentile of the objects per event.
        storage_options: fsspec options when ``source`` is a URL.
    """
    return _starter(_open(source, storage_options), max_entries, percentile)[0]


def starter_yaml(
    source: Source | str,
    *,
    max_entries: int = 100_000,
    percentile: float = 95.0,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """:func:`starter_schema` as YAML text with a header comment; skipped fields are listed
    as comments at the end."""
    src = _open(source, storage_options)
    doc, skipped, read = _starter(src, max_entries, percentile)
    header = (
        f"Starter schema for {src.url}:{src.tree} ({src.num_entries} entries), written by\n"
        f"`rntensor schema init`.  Padded lengths are the {percentile:g}th percentile of objects\n"
        f"per event over the first {read} entries.  Edit it: add defines, a selection, sort_by\n"
        "and labels, or move fields between outputs; see the schemas/ folder for examples."
    )
    text = load_schema(doc).to_yaml(header=header)
    if skipped:
        text += "\n# skipped: rntensor cannot turn these fields into tensors\n"
        text += "".join(f"#   {path}: {typename}\n" for path, typename in skipped)
    return text


def _open(source: Source | str, storage_options: Mapping[str, Any] | None) -> Source:
    if isinstance(source, str):
        return open_source(source, storage_options=storage_options)
    return source


def _identifier(text: str, fallback: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", text).strip("_.-")
    if not name or not name[0].isalpha():
        name = f"{fallback}_{name}" if name else fallback
    return name


def _starter(
    src: Source, max_entries: int, percentile: float
) -> tuple[dict[str, Any], list[tuple[str, str]], int]:
    fields = src.fields
    skipped = [(p, fi.typename or fi.dtype) for p, fi in fields.items() if not fi.supported]
    scalars = [p for p, fi in fields.items() if fi.supported and not fi.jagged]
    collections: dict[str, list[str]] = {}
    for p, fi in fields.items():
        if fi.supported and fi.jagged:
            collections.setdefault(fi.collection or p, []).append(p)
    if not scalars and not collections:
        raise SchemaError(
            f"{src.url}:{src.tree} has no field rntensor can turn into tensors "
            f"({len(skipped)} unsupported); nothing to put in a schema"
        )
    keep = [p for p in scalars if p in _KEEP]
    weights = next((p for p in _WEIGHTS if p in scalars and fields[p].dtype != "bool"), None)
    label = next((p for p in _LABELS if p in scalars), None)
    features = [p for p in scalars if p not in keep and p not in (weights, label)]

    n_read = min(src.num_entries, max(0, int(max_entries)))
    probes = [paths[0] for paths in collections.values()]
    if label is not None:
        probes.append(label)
    columns = src.read(probes, 0, n_read) if probes and n_read else {}

    outputs: dict[str, Any] = {}
    if features:
        outputs["scalars"] = {"fields": features}
    for coll, paths in collections.items():
        name = _identifier(coll.lower(), "objects")
        while name in outputs or name in ("scalars", *keep) or name in ("target",):
            name += "_objects"
        col = columns.get(paths[0])
        counts = col.counts if isinstance(col, Jagged) else np.zeros(0, dtype=np.int64)
        length = math.ceil(np.percentile(counts, percentile)) if len(counts) else 1
        outputs[name] = {"fields": paths, "length": max(1, length)}
    doc: dict[str, Any] = {
        "name": _identifier(src.name.rsplit(".", 1)[0], "schema"),
        "tree": src.tree,
        "outputs": outputs,
    }
    if label is not None:
        doc["labels"] = {"target": _label(label, fields[label].dtype, columns.get(label))}
    if weights is not None:
        doc["weights"] = weights
    if keep:
        doc["keep"] = keep
    return doc, skipped, n_read


def _label(path: str, dtype: str, values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"field": path}
    if np.dtype(dtype).kind in "biu" and isinstance(values, np.ndarray) and len(values):
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and 1 <= hi < _MAX_CLASSES:
            out["classes"] = hi + 1
    return out
