"""Which columns a batch holds, and the statistics that normalize them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rntensor.errors import CacheError, SchemaError, did_you_mean

__all__ = ["MODEL_KINDS", "SHARD_COLUMN", "Output", "resolve_outputs"]

MODEL_KINDS = ("padded", "mask", "ragged", "flat", "label", "weight")
SHARD_COLUMN = "_shard"  # synthetic: index of the shard (or table) a row came from


@dataclass(frozen=True)
class Output:
    """One column of the batches.

    ``mean``/``inv_std`` are set when normalization applies, one value per element of a row
    (tiled over the ``L`` objects of a padded output, so a batch normalizes as one contiguous
    ``(n, L * F)`` array: numpy is slow at broadcasting over a short last axis).  ``mask``
    names the mask of a padded column, whose padded slots keep ``pad_value``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    classes: int | None = None
    mean: np.ndarray | None = None
    inv_std: np.ndarray | None = None
    mask: str | None = None
    pad_value: float = 0.0
    hidden: bool = False  # gathered for another output (a mask for normalization), not yielded


def resolve_outputs(
    meta: Mapping[str, Mapping[str, Any]],
    *,
    stats: Mapping[str, Mapping[str, Mapping[str, float]]] | None,
    schema: Mapping[str, Any] | None,
    columns: Sequence[str] | None,
    keep: bool,
    normalize: bool,
    where: str,
    masks: bool = True,
) -> list[Output]:
    """The batch columns from manifest column entries ``meta`` and the user's choices.

    ``masks=False`` leaves out the masks of padded outputs unless ``columns`` names them
    (normalization still gathers those it needs, without yielding them).
    """
    kinds = MODEL_KINDS if masks else tuple(k for k in MODEL_KINDS if k != "mask")
    if columns is None:
        names = [c for c, m in meta.items() if m.get("kind") in kinds]
        if keep:
            names += [c for c, m in meta.items() if m.get("kind") in ("keep", "entry")]
            names.append(SHARD_COLUMN)
    else:
        if isinstance(columns, str):
            raise TypeError(f"columns must be a list of names, got the string {columns!r}")
        names = []
        for c in columns:
            if c not in meta and c != SHARD_COLUMN:
                raise SchemaError(
                    f"column {c!r} is not in {where}; it has {sorted(meta)}.{did_you_mean(c, meta)}"
                )
            names.append(c)
            mask = f"{c}_mask"
            padded = meta.get(c, {}).get("kind") == "padded"
            if masks and padded and mask in meta and mask not in columns:
                names.append(mask)
    outs_schema = (schema or {}).get("outputs") or {}
    outputs = []
    for name in dict.fromkeys(names):
        if name == SHARD_COLUMN:
            outputs.append(Output(name, "shard", (), "int64"))
            continue
        m = meta[name]
        kind = str(m.get("kind"))
        mean = inv_std = None
        if normalize and m.get("normalize") == "standard" and kind in ("padded", "flat", "ragged"):
            mean, inv_std = _standard(name, list(m.get("fields") or []), stats or {}, where)
            if kind == "padded":
                length = int(m["shape"][0])
                mean, inv_std = np.tile(mean, length), np.tile(inv_std, length)
        mask_name = f"{name}_mask" if kind == "padded" and f"{name}_mask" in meta else None
        outputs.append(
            Output(
                name,
                kind,
                tuple(int(d) for d in m.get("shape", ())),
                str(m.get("dtype")),
                classes=m.get("classes"),
                mean=mean,
                inv_std=inv_std,
                mask=mask_name,
                pad_value=float((outs_schema.get(name) or {}).get("pad_value", 0.0) or 0.0),
            )
        )
    for o in outputs:  # normalization of padded slots needs the mask gathered too
        if o.mean is not None and o.mask and all(p.name != o.mask for p in outputs):
            outputs.append(Output(o.mask, "mask", (o.shape[0],), "bool", hidden=not masks))
    return outputs


def _standard(
    name: str, fields: list[str], stats: Mapping[str, Mapping[str, Mapping[str, float]]], where: str
) -> tuple[np.ndarray, np.ndarray]:
    per = stats.get(name) or {}
    missing = [f for f in fields if f not in per]
    if not fields or missing:
        raise CacheError(
            f"output {name!r} asks for standard normalization but {where} has no statistics "
            f"for fields {missing or fields}; re-run `rntensor convert` (it writes them), or pass "
            "normalize=False"
        )
    mean = np.array([per[f]["mean"] for f in fields], dtype=np.float32)
    std = np.array([per[f]["std"] for f in fields], dtype=np.float64)
    std[~np.isfinite(std) | (std <= 0)] = 1.0  # constant feature: centre only
    return mean, (1.0 / std).astype(np.float32)
