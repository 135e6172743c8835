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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    from rntensor.schema.expr import Expr
    from rntensor.sources import Column

__all__ = [
    "LabelSpec",
    "OutputSpec",
    "ResolvedLabel",
    "ResolvedOutput",
    "ResolvedSchema",
    "Schema",
    "default_label_dtype",
]

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

    def __post_init__(self) -> None:
        if not isinstance(self.fields, tuple):
            object.__setattr__(self, "fields", tuple(self.fields))

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
        dtype: ``int64`` for classes, ``float32`` for regression by default
            (:func:`default_label_dtype`).
    """

    name: str
    field: str
    classes: int | None = None
    dtype: str = ""

    def __post_init__(self) -> None:
        if not self.dtype:
            object.__setattr__(self, "dtype", default_label_dtype(self.classes))


def default_label_dtype(classes: int | None) -> str:
    """``int64`` for a classification target, ``float32`` for regression."""
    return "int64" if classes is not None else "float32"


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

    def __post_init__(self) -> None:
        for name in ("outputs", "labels", "keep"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able dict (the normalized form stored in manifests)."""
        d = asdict(self)
        d["outputs"] = {
            o["name"]: {k: v for k, v in o.items() if k != "name"} for o in d["outputs"]
        }
        d["labels"] = {
            lb["name"]: {k: v for k, v in lb.items() if k != "name"} for lb in d["labels"]
        }
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

    def to_yaml(self, *, header: str | None = None) -> str:
        """The schema as YAML text, defaults left out; ``header`` becomes a ``#`` comment.

        ``load_schema(schema.to_yaml())`` gives back an equal schema (same fingerprint).
        """
        doc: dict[str, Any] = {"name": self.name}
        if self.tree is not None:
            doc["tree"] = self.tree
        if self.selection is not None:
            doc["selection"] = self.selection
        if self.define:
            doc["define"] = dict(self.define)
        outputs: dict[str, Any] = {}
        for o in self.outputs:
            out: dict[str, Any] = {"fields": list(o.fields)}
            if o.length is not None:
                out["length"] = o.length
            if o.ragged:
                out["ragged"] = True
            if o.pad_value != 0:
                out["pad_value"] = o.pad_value
            if o.sort_by is not None:
                out["sort_by"] = o.sort_by
            if o.normalize != "none":
                out["normalize"] = o.normalize
            if o.dtype != "float32":
                out["dtype"] = o.dtype
            outputs[o.name] = out
        doc["outputs"] = outputs
        if self.labels:
            labels: dict[str, Any] = {}
            for lb in self.labels:
                d = _Flow(field=lb.field)
                if lb.classes is not None:
                    d["classes"] = lb.classes
                if lb.dtype != default_label_dtype(lb.classes):
                    d["dtype"] = lb.dtype
                labels[lb.name] = d
            doc["labels"] = labels
        if self.weights is not None:
            doc["weights"] = self.weights
        if self.keep:
            doc["keep"] = list(self.keep)
        text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
        if header:
            text = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + text
        return text


class _Flow(dict):
    """A mapping written on one line (``{field: label, classes: 2}``)."""


class _Dumper(yaml.SafeDumper):
    pass


def _flow_seq(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


def _flow_map(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True)


_Dumper.add_representer(list, _flow_seq)
_Dumper.add_representer(_Flow, _flow_map)


@dataclass(frozen=True)
class ResolvedOutput:
    """One output checked against a source's fields.

    Args:
        name: the output's name.
        kind: ``flat``, ``padded`` or ``ragged``.
        fields: field or define names, one per feature.
        field_dtypes: numpy dtype name of each field's values (before the cast to ``dtype``).
        collection: the collection whose objects a padded/ragged output holds (``Jet``);
            ``None`` for a flat output.
        dtype: numpy dtype of the tensor.
        length: objects per event of a padded output.
        pad_value: value of padded slots.
        normalize: ``standard`` or ``none``.
        sort_by: the parsed ``sort_by`` expression (one value per object), if any.
    """

    name: str
    kind: Literal["flat", "padded", "ragged"]
    fields: tuple[str, ...]
    field_dtypes: tuple[str, ...]
    collection: str | None
    dtype: str
    length: int | None
    pad_value: float
    normalize: Normalize
    sort_by: Expr | None


@dataclass(frozen=True)
class ResolvedLabel:
    """A label checked against a source: ``field_dtype`` is the dtype of its values."""

    name: str
    field: str
    classes: int | None
    dtype: str
    field_dtype: str


@dataclass(frozen=True, eq=False)
class ResolvedSchema:
    """A schema checked against the fields of an input: what the conversion needs.

    Built by :func:`rntensor.schema.validate`, a pure function of (schema, fields).

    Args:
        schema: the normalized :class:`Schema`.
        input_fields: raw source paths to read, sorted.
        defines_order: the defines needed, each after the ones it references.
        defines: parsed expression of every define in ``defines_order``.
        selection: the parsed selection (one bool per event), if any.
        selection_defines: the defines the selection needs (a prefix-closed subset of
            ``defines_order``, in order): evaluate these before selecting events.
        outputs: every output, resolved.
        labels: every label, resolved.
        weights: name of the per-event weight field or define, if any.
        keep: names of per-event fields copied through unchanged.
        dtypes: numpy dtype name of every source field and define used.
        collections: the collection of every name used (``None`` for per-event values).
    """

    schema: Schema
    input_fields: tuple[str, ...]
    defines_order: tuple[str, ...]
    defines: dict[str, Expr]
    selection: Expr | None
    selection_defines: tuple[str, ...]
    outputs: tuple[ResolvedOutput, ...]
    labels: tuple[ResolvedLabel, ...]
    weights: str | None
    keep: tuple[str, ...]
    dtypes: dict[str, str]
    collections: dict[str, str | None]

    @property
    def sort_keys(self) -> dict[str, Expr]:
        """Output name → parsed ``sort_by`` for the outputs that have one."""
        return {o.name: o.sort_by for o in self.outputs if o.sort_by is not None}

    def field_dtype(self, name: str) -> str:
        """numpy dtype name of a source field or define used by the schema."""
        return self.dtypes[name]

    def output(self, name: str) -> ResolvedOutput:
        for o in self.outputs:
            if o.name == name:
                return o
        raise KeyError(name)

    def evaluate_defines(
        self,
        columns: Mapping[str, Column],
        n_events: int,
        *,
        names: tuple[str, ...] | None = None,
    ) -> dict[str, Column]:
        """``columns`` plus the defines in ``names`` (default: all), evaluated in order.

        Defines already present in ``columns`` are not evaluated again.
        """
        from rntensor.schema.expr import evaluate

        env: dict[str, Column] = dict(columns)
        for name in self.defines_order if names is None else names:
            if name not in env:
                env[name] = evaluate(self.defines[name], env, n_events)
        return env


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x
