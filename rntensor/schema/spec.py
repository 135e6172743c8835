"""What columns mean: the schema dataclasses.

A :class:`Schema` is the user's contract between a ROOT file and what a model sees.  It is
built from YAML (:func:`rntensor.schema.load_schema`) or directly in Python; both paths go
through the same validation.  Expressions (``selection``, ``define`` values, ``sort_by``) are
kept as text here and parsed by :mod:`rntensor.schema.expr`.

Output kinds:

* **flat** (no ``length``, not ``ragged``): every field is one value per event → ``(N, F)``.
* **padded** (``length: L``): jagged fields of one collection, sorted (``sort_by``), clipped
  or padded to ``L`` objects → ``(N, L, F)`` plus a bool mask ``<name>_mask`` ``(N, L)``.
* **ragged** (``ragged: true``): jagged fields of one collection kept variable-length →
  values ``(total, F)`` and offsets ``(N + 1,)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = ["LabelSpec", "OutputSpec", "Schema"]

Normalize = Literal["standard", "none"]


@dataclass(frozen=True)
class OutputSpec:
    """One tensor (or tensor family) a model sees.

    Args:
        name: key in every batch (``jets``); a padded output adds ``<name>_mask``.
        fields: field names or ``define`` names, one per feature (last axis).
        length: pad/clip to this many objects (padded output).
        ragged: keep objects variable-length (values + offsets).
        pad_value: value written into padded slots.
        sort_by: expression over the collection's objects; objects are ordered by it,
            ascending, before clipping (``-Jet_pt`` is descending pt).
        normalize: ``"standard"`` stores per-field mean/std at conversion and applies
            ``(x - mean) / std`` on load; ``"none"`` leaves values alone.
        dtype: numpy dtype of the tensor (``float32`` by default).
    """

    name: str
    fields: tuple[str, ...]
    length: int | None = None
    ragged: bool = False
    pad_value: float = 0.0
    sort_by: str | None = None
    normalize: Normalize = "none"
    dtype: str = "float32"

    @property
    def kind(self) -> Literal["flat", "padded", "ragged"]:
        if self.ragged:
            return "ragged"
        if self.length is not None:
            return "padded"
        return "flat"


@dataclass(frozen=True)
class LabelSpec:
    """A training target.

    Args:
        name: key in every batch (``target``).
        field: field or define holding the class index (or regression value).
        classes: number of classes for a classification target; ``None`` for regression.
        dtype: ``int64`` for classes, ``float32`` for regression by default.
    """

    name: str
    field: str
    classes: int | None = None
    dtype: str = "int64"


@dataclass(frozen=True)
class Schema:
    """A whole schema. See ``schemas/`` for examples and :mod:`rntensor.schema.load`."""

    name: str
    outputs: tuple[OutputSpec, ...]
    tree: str | None = None
    selection: str | None = None
    define: dict[str, str] = field(default_factory=dict)
    labels: tuple[LabelSpec, ...] = ()
    weights: str | None = None
    keep: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict (the normalized form stored in manifests)."""
        d = asdict(self)
        d["outputs"] = {o["name"]: {k: v for k, v in o.items() if k != "name"} for o in d["outputs"]}
        d["labels"] = {lb["name"]: {k: v for k, v in lb.items() if k != "name"} for lb in d["labels"]}
        return _jsonable(d)

    def fingerprint(self) -> str:
        """A stable hash of the normalized content: key order and comments do not matter."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def output(self, name: str) -> OutputSpec:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
