"""Arrow shard columns → numpy arrays, zero-copy (the "numpy view" column of FORMAT.md).

Decoded layout (``n`` rows):

* padded ``(n, L, F)``; mask ``(n, L)`` bool; flat ``(n, F)``; label, weight, keep and
  ``_entry`` ``(n,)``;
* ragged ``name`` → values ``(total, F)`` and ``name_offsets`` ``(n + 1,)`` int64 from 0.

Arrays are views of the Arrow buffers (read-only; memory-mapped when the shard is), except
for a column spread over several record batches, which is concatenated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["decode_column"]


def _numpy(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


def decode_column(
    name: str, column: pa.ChunkedArray | pa.Array, spec: dict[str, Any]
) -> dict[str, np.ndarray]:
    """One Arrow column → ``{name: array}`` (+ ``name_offsets`` when ragged), zero-copy."""
    arr = column
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.chunk(0) if arr.num_chunks == 1 else arr.combine_chunks()
    kind = spec.get("kind")
    shape = tuple(int(d) for d in spec.get("shape", ()))
    n = len(arr)
    if kind == "ragged":
        if not pa.types.is_large_list(arr.type) and not pa.types.is_list(arr.type):
            raise TypeError(f"expected a large_list column, got {arr.type}")
        offsets = _numpy(arr.offsets).astype(np.int64, copy=False)
        child = arr.values
        values = _numpy(child.flatten() if pa.types.is_fixed_size_list(child.type) else child)
        values = values.reshape((-1, *shape))
        if offsets[0] != 0 or offsets[-1] != len(values):
            values = values[offsets[0] : offsets[-1]]
            offsets = offsets - offsets[0]
        return {name: values, f"{name}_offsets": offsets}
    if pa.types.is_fixed_size_list(arr.type):
        values = _numpy(arr.flatten()).reshape((n, *shape))
    else:
        values = _numpy(arr)
        if shape:
            values = values.reshape((n, *shape))
    if kind == "mask" and values.dtype != np.bool_:
        values = values.view(np.bool_) if values.dtype.itemsize == 1 else values.astype(bool)
    return {name: values}
