"""Assemble batches from decoded tables: vectorized gathers into one buffer per batch.

A *table* is the ``dict[str, np.ndarray]`` layout of :meth:`CacheReader.read_shard` (also what
a streaming source yields).  A batch is assembled with one ``np.take`` per column and table part
straight into views of a single, freshly allocated byte buffer; ragged columns are gathered with
offsets arithmetic.  The Python work per batch grows with the number of columns and tables
touched, never with the batch size.

One buffer per batch (not one array per column) matters downstream: a DataLoader worker hands
over one shared-memory segment per batch instead of one per column (the per-tensor IPC cost
dominated multi-worker loading), pinning pins one block, and the device copy is one transfer;
:func:`unpack` then cuts the columns back out as zero-copy views, on whichever device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rntensor.torch.columns import Output

__all__ = ["Layout", "Packed", "Part", "gather", "unpack"]

_ALIGN = 64

# (name, numpy dtype name, shape, byte offset) of every array in a batch buffer
Layout = tuple[tuple[str, str, tuple[int, ...], int], ...]


@dataclass
class Part:
    """The rows of one table that a batch takes: ``rows`` of ``arrays``, into ``index``."""

    arrays: Mapping[str, np.ndarray]
    rows: np.ndarray
    index: np.ndarray | None  # batch positions; None: all of them, in order
    table: int


@dataclass
class Packed:
    """One batch: numpy views ``arrays`` into ``buffer``, described by ``layout``."""

    arrays: dict[str, np.ndarray]
    buffer: np.ndarray
    layout: Layout


def _allocate(specs: list[tuple[str, np.dtype, tuple[int, ...]]]) -> Packed:
    layout = []
    offset = 0
    for name, dtype, shape in specs:
        layout.append((name, dtype.name, shape, offset))
        nbytes = math.prod(shape) * dtype.itemsize
        offset += -(-nbytes // _ALIGN) * _ALIGN
    buffer = np.empty(offset, dtype=np.uint8)
    arrays = {}
    for (name, dtype, shape), (_, _, _, off) in zip(specs, layout, strict=True):
        nbytes = math.prod(shape) * dtype.itemsize
        arrays[name] = buffer[off : off + nbytes].view(dtype).reshape(shape)
    return Packed(arrays, buffer, tuple(layout))


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``concat(arange(s, s + c) for s, c)`` without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(total, dtype=np.int64)


def _ragged_counts(name: str, parts: Sequence[Part], n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    counts = np.empty(n, dtype=np.int64)
    firsts = []
    for p in parts:
        off = p.arrays[f"{name}_offsets"]
        first = off[p.rows]
        firsts.append(first)
        counts[slice(None) if p.index is None else p.index] = off[p.rows + 1] - first
    return counts, firsts


def gather(outputs: Sequence[Output], parts: Sequence[Part], n: int) -> Packed:
    """Assemble one batch of ``n`` rows from ``parts``; normalization applied."""
    ragged = {o.name: _ragged_counts(o.name, parts, n) for o in outputs if o.kind == "ragged"}
    specs: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    for o in outputs:
        if o.kind == "shard":
            specs.append((o.name, np.dtype(np.int64), (n,)))
            continue
        src = parts[0].arrays[o.name]
        if o.kind == "ragged":
            total = int(ragged[o.name][0].sum())
            specs.append((o.name, src.dtype, (total, *src.shape[1:])))
            specs.append((f"{o.name}_offsets", np.dtype(np.int64), (n + 1,)))
        else:
            specs.append((o.name, src.dtype, (n, *src.shape[1:])))
    batch = _allocate(specs)
    out = batch.arrays
    for o in outputs:
        if o.kind == "ragged":
            _fill_ragged(o.name, parts, out, *ragged[o.name])
        elif o.kind == "shard":
            for p in parts:
                out[o.name][slice(None) if p.index is None else p.index] = p.table
        else:
            dst = out[o.name]
            for p in parts:
                if p.index is None:
                    np.take(p.arrays[o.name], p.rows, axis=0, out=dst)
                else:
                    dst[p.index] = np.take(p.arrays[o.name], p.rows, axis=0)
    for o in outputs:
        if o.mean is not None and o.inv_std is not None:
            mask = out[o.mask] if o.mask else None
            _normalize(out[o.name], o.mean, o.inv_std, mask, o.shape[-1], o.pad_value)
    return batch


def _fill_ragged(
    name: str,
    parts: Sequence[Part],
    out: dict[str, np.ndarray],
    counts: np.ndarray,
    firsts: list[np.ndarray],
) -> None:
    offsets = out[f"{name}_offsets"]
    offsets[0] = 0
    np.cumsum(counts, out=offsets[1:])
    values = out[name]
    for p, first in zip(parts, firsts, strict=True):
        c = counts if p.index is None else counts[p.index]
        src = _ranges(first, c)
        if p.index is None:
            np.take(p.arrays[name], src, axis=0, out=values)
        else:
            values[_ranges(offsets[p.index], c)] = np.take(p.arrays[name], src, axis=0)


def _normalize(
    x: np.ndarray,
    mean: np.ndarray,
    inv_std: np.ndarray,
    mask: np.ndarray | None,
    nf: int,
    pad: float,
) -> None:
    """``(x - mean) / std`` in place, on rows flattened to match the tiled statistics;
    slots where ``mask`` is false (each covering ``nf`` values) go back to ``pad``."""
    flat = x.reshape(len(x), -1)
    np.subtract(flat, mean, out=flat, casting="unsafe")
    np.multiply(flat, inv_std, out=flat, casting="unsafe")
    if mask is None:
        return
    keep = np.repeat(mask, nf, axis=1)
    if pad == 0.0:
        np.multiply(flat, keep, out=flat)
    else:
        np.copyto(flat, np.asarray(pad, dtype=x.dtype), where=~keep)


_TORCH_DTYPES: dict[str, torch.dtype] = {}


def _torch_dtype(name: str) -> torch.dtype:
    dt = _TORCH_DTYPES.get(name)
    if dt is None:
        dt = _TORCH_DTYPES[name] = torch.from_numpy(np.empty(0, dtype=name)).dtype
    return dt


def unpack(buffer: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """The columns of a batch buffer as zero-copy tensor views (on the buffer's device)."""
    out = {}
    for name, dtype, shape, offset in layout:
        dt = _torch_dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        out[name] = buffer[offset : offset + nbytes].view(dt).view(shape)
    return out
