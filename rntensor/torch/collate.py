"""Assemble batches from decoded tables: vectorized gathers into one buffer per chunk.

A *table* is the ``dict[str, np.ndarray]`` layout of :meth:`CacheReader.read_shard` (also what
a streaming source yields).  A *chunk* is a few consecutive batches assembled together: one
``np.take`` per column and table part, straight into views of a single, freshly allocated byte
buffer (ragged columns by offsets arithmetic), so the Python work per chunk grows with the
number of columns and tables touched, never with the batch size, and is shared by the chunk's
batches.

One buffer per chunk (not one array per column and batch) also matters downstream: a
DataLoader worker hands over one shared-memory segment per chunk (torch's per-tensor IPC cost
dominated multi-worker loading), pinning pins one block, and the device copy is one transfer;
:func:`unpack` then cuts each batch's columns back out as zero-copy views, on any device.
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

import numpy as np
import torch

from rntensor.errors import RNTensorError
from rntensor.torch.columns import Output

__all__ = [
    "Helpers",
    "Item",
    "Layout",
    "Packed",
    "Part",
    "WorkerFailure",
    "gather",
    "in_turn",
    "unpack",
    "worker_batches",
]

_ALIGN = 64
T = TypeVar("T")

# (name, numpy dtype string, shape, byte offset) of every array in a batch buffer
Layout = tuple[tuple[str, str, tuple[int, ...], int], ...]


@dataclass
class Part:
    """The rows of one table that a batch takes: ``rows`` of ``arrays``, into ``index``."""

    arrays: Mapping[str, np.ndarray]
    rows: np.ndarray
    index: slice | np.ndarray | None  # chunk positions; None: all of them, in order
    table: int


@dataclass
class Packed:
    """A chunk: ``batches[j]`` are numpy views into ``buffer``, described by ``layouts[j]``."""

    buffer: np.ndarray
    batches: list[dict[str, np.ndarray]]

    @property
    def layouts(self) -> tuple[Layout, ...]:
        """Where each batch's arrays lie in ``buffer`` (see :func:`unpack`)."""
        base = self.buffer.__array_interface__["data"][0]
        return tuple(
            tuple(
                (name, v.dtype.str, v.shape, v.__array_interface__["data"][0] - base)
                for name, v in views.items()
            )
            for views in self.batches
        )


Spec = tuple[str, np.dtype, tuple[int, ...]]


class _BufferPool:
    """Chunk buffers of this thread, reused once nothing refers to them any more.

    A fresh multi-megabyte ``np.empty`` is a fresh ``mmap`` to glibc: its pages fault in on
    the first write, ~10k page faults per million events.  A buffer whose batches (numpy
    views, tensors made from them) are all gone is only referenced from here, which its
    reference count tells; one still in use is never handed out again.
    """

    def __init__(self, keep: int = 6) -> None:
        self.keep = keep
        self._local = threading.local()

    def get(self, nbytes: int) -> np.ndarray:
        pool: list[np.ndarray] | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = []
        for i in range(len(pool)):
            buf = pool[i]
            # referenced by the list, ``buf`` and getrefcount's argument only: free
            if nbytes <= buf.nbytes <= 2 * nbytes and sys.getrefcount(buf) == _FREE_REFS:
                pool.append(pool.pop(i))  # most recently used last
                return buf[:nbytes]
        buf = np.empty(nbytes, dtype=np.uint8)
        pool.append(buf)
        if len(pool) > self.keep:
            del pool[0]
        return buf[:nbytes]  # always a view: what refers to it holds a reference to ``buf``


_FREE_REFS = 3
_buffers = _BufferPool()


def _allocate(specs: list[Spec]) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, int]]]:
    """One buffer holding every array of ``specs``: ``{name: (view, byte offset)}``."""
    offsets = []
    total = 0
    for _, dtype, shape in specs:
        offsets.append(total)
        total += -(-math.prod(shape) * dtype.itemsize // _ALIGN) * _ALIGN
    buffer = _buffers.get(total)
    arrays = {}
    for (name, dtype, shape), off in zip(specs, offsets, strict=True):
        nbytes = math.prod(shape) * dtype.itemsize
        arrays[name] = (buffer[off : off + nbytes].view(dtype).reshape(shape), off)
    return buffer, arrays


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


def gather(
    outputs: Sequence[Output],
    parts: Sequence[Part],
    sizes: Sequence[int],
) -> Packed:
    """Assemble a chunk of batches of ``sizes`` rows (consecutive in ``parts``' batch
    positions) in one pass; normalization applied."""
    n = int(sum(sizes))
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ragged = {o.name: _ragged_counts(o.name, parts, n) for o in outputs if o.kind == "ragged"}
    specs: list[Spec] = []
    for o in outputs:
        if o.kind == "shard":
            specs.append((o.name, np.dtype(np.int64), (n,)))
            continue
        src = parts[0].arrays[o.name]
        if o.kind == "ragged":
            total = int(ragged[o.name][0].sum())
            specs.append((o.name, src.dtype, (total, *src.shape[1:])))
            for j, size in enumerate(sizes):  # each batch's offsets start at 0
                specs.append((f"{o.name}_offsets#{j}", np.dtype(np.int64), (size + 1,)))
        else:
            specs.append((o.name, src.dtype, (n, *src.shape[1:])))
    buffer, arrays = _allocate(specs)
    out = {name: a for name, (a, _) in arrays.items()}
    firsts: dict[str, np.ndarray] = {}
    for o in outputs:
        if o.kind == "ragged":
            firsts[o.name] = _fill_ragged(o.name, parts, out, *ragged[o.name], edges)
        elif o.kind == "shard":
            for p in parts:
                out[o.name][slice(None) if p.index is None else p.index] = p.table
    _fill_fixed([o for o in outputs if o.kind not in ("ragged", "shard")], parts, out)
    for o in outputs:
        if o.kind == "ragged" and o.mean is not None and o.inv_std is not None:
            _normalize(out[o.name], o.mean, o.inv_std, None, o.shape[-1], o.pad_value)
    return _split(outputs, arrays, firsts, edges, buffer)


def _fill_fixed(
    outputs: Sequence[Output], parts: Sequence[Part], out: dict[str, np.ndarray]
) -> None:
    """Gather the fixed-size ``outputs``, then normalize them.

    ``np.take(..., out=)`` gathers straight into the buffer only with ``mode="clip"`` (or
    ``"wrap"``): with the default ``"raise"`` numpy gathers into a temporary and copies it
    over, at twice the cost.  Rows come from the plan and are always in range.
    """
    for o in outputs:
        dst = out[o.name]
        for p in parts:
            src = p.arrays[o.name]
            if p.index is None:
                np.take(src, p.rows, axis=0, out=dst, mode="clip")
            elif isinstance(p.index, slice):
                np.take(src, p.rows, axis=0, out=dst[p.index], mode="clip")
            else:  # scattered positions
                dst[p.index] = np.take(src, p.rows, axis=0)
    for o in outputs:
        if o.mean is not None and o.inv_std is not None:
            mask = out[o.mask] if o.mask else None
            _normalize(out[o.name], o.mean, o.inv_std, mask, o.shape[-1], o.pad_value)


class Helpers:
    """Threads that assemble chunks beside the consuming thread (see :func:`in_turn`), and
    run planning ahead of it (:meth:`ahead`).  The row gathers (``np.take``) and the large
    array operations of the planning release the GIL, so they use a second core."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="rntensor-gather")

    def ahead(self, job: Callable[[], T]) -> Future[T]:
        return self._pool.submit(job)

    def close(self) -> None:
        """Cancel what has not started, wait for the rest: no thread outlives this."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def in_turn(jobs: Iterable[Callable[[], Packed]], helpers: Helpers | None) -> Iterator[Packed]:
    """The results of ``jobs`` (chunk assemblies), in order.

    With helpers, jobs go round-robin: this thread runs one while the ``helpers.threads``
    next ones run in the helpers, and the round after is queued before this one's results
    are handed out, so the helpers keep working while the consumer does.  A helper's job not
    started by the time its result is due is taken back and run here.  ``jobs`` is consumed
    here, in order (one round ahead).
    """
    it = iter(jobs)
    if helpers is None:
        for job in it:
            yield job()
        return

    def next_round() -> tuple[Callable[[], Packed] | None, list[tuple[Any, Future[Packed]]]]:
        mine = next(it, None)
        theirs = list(islice(it, helpers.threads)) if mine is not None else []
        return mine, [(job, helpers.ahead(job)) for job in theirs]

    mine, theirs = next_round()
    while mine is not None:
        yield mine()
        later = next_round()
        for job, future in theirs:
            yield job() if future.cancel() else future.result()
        mine, theirs = later


def _split(
    outputs: Sequence[Output],
    arrays: dict[str, tuple[np.ndarray, int]],
    firsts: dict[str, np.ndarray],
    edges: np.ndarray,
    buffer: np.ndarray,
) -> Packed:
    """Each batch's views of the chunk's arrays."""
    cols = [(o.name, arrays[o.name][0], o.kind == "ragged") for o in outputs if not o.hidden]
    bounds = edges.tolist()
    batches = []
    if not any(r for _, _, r in cols):
        for j in range(len(bounds) - 1):
            a, b = bounds[j], bounds[j + 1]
            batches.append({name: arr[a:b] for name, arr, _ in cols})
        return Packed(buffer, batches)
    for j in range(len(bounds) - 1):
        a, b = bounds[j], bounds[j + 1]
        views = {}
        for name, arr, ragged in cols:
            if ragged:
                views[name] = arr[int(firsts[name][a]) : int(firsts[name][b])]
                views[f"{name}_offsets"] = arrays[f"{name}_offsets#{j}"][0]
            else:
                views[name] = arr[a:b]
        batches.append(views)
    return Packed(buffer, batches)


def _fill_ragged(
    name: str,
    parts: Sequence[Part],
    out: dict[str, np.ndarray],
    counts: np.ndarray,
    firsts: list[np.ndarray],
    edges: np.ndarray,
) -> np.ndarray:
    """Gather a ragged column; returns the chunk-wide offsets (``n + 1``)."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    for j in range(len(edges) - 1):
        a, b = int(edges[j]), int(edges[j + 1])
        np.subtract(offsets[a : b + 1], offsets[a], out=out[f"{name}_offsets#{j}"])
    values = out[name]
    for p, first in zip(parts, firsts, strict=True):
        c = counts if p.index is None else counts[p.index]
        src = _ranges(first, c)
        if p.index is None:
            np.take(p.arrays[name], src, axis=0, out=values, mode="clip")
        elif isinstance(p.index, slice):  # a run of consecutive rows: one contiguous block
            a, b = int(offsets[p.index.start]), int(offsets[p.index.stop])
            np.take(p.arrays[name], src, axis=0, out=values[a:b], mode="clip")
        else:
            values[_ranges(offsets[p.index], c)] = np.take(p.arrays[name], src, axis=0)
    return offsets


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


class WorkerFailure:
    """An rntensor error in a DataLoader worker, sent in place of the batch it spoiled.

    torch re-raises worker exceptions with the traceback folded into the message; sent as a
    value, the error reaches the caller as it was raised (type, message, shard context).
    """

    def __init__(self, error: RNTensorError) -> None:
        self.error = error


Item = tuple[torch.Tensor, tuple[Layout, ...]]


def worker_batches(
    chunks: Iterator[Packed], worker: int, workers: int, rank: int, in_worker: bool
) -> Iterator[Item | WorkerFailure]:
    """``(buffer tensor, layouts)`` of each chunk (see :func:`unpack`); in a worker process
    an rntensor error becomes a :class:`WorkerFailure`."""
    try:
        for chunk in chunks:
            yield torch.from_numpy(chunk.buffer), chunk.layouts
    except RNTensorError as err:
        if not in_worker:
            raise
        yield WorkerFailure(
            err.with_context(f"DataLoader worker {worker} of {workers}, rank {rank}")
        )
