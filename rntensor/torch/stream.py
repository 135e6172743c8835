"""``StreamDataset``: batches straight from a stream of tables (ROOT read on the fly, no cache).

A *table source* is any picklable callable ``tables(part, num_parts, epoch)`` returning an
iterable of tables in the :meth:`~rntensor.cache.read.CacheReader.read_shard` layout, each
optionally paired with its origin (``(table, name)`` or ``(table, task)`` where ``task.source``
has a ``name``; the origin names the source file for splits).  Consumer ``part`` of ``num_parts``
(every DataLoader worker of every rank) must get a disjoint share: :class:`RootTables` hands out
the converter's tasks (file, entry range) round-robin after a per-epoch permutation.

Batching, shuffling (the same window shuffle as the cache path, here per consumer), splits and
collation are the cache path's code.  Row counts are unknown up front, so there is no
``len()``, no ``even_split``, and the order depends on the number of workers; an exact resume
needs ``num_workers=0`` (the tables before the resume point are read again but not collated).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from torch.utils.data import get_worker_info

from rntensor.torch.collate import (
    Helpers,
    Item,
    Packed,
    Part,
    WorkerFailure,
    gather,
    in_turn,
    worker_batches,
)
from rntensor.torch.columns import resolve_outputs
from rntensor.torch.dataset import _BatchDataset, chunk_parts
from rntensor.torch.plan import (
    _BUFFER,
    _ROW_ORDER,
    BatchCutter,
    Chunker,
    epoch_rng,
    split_mask,
)

__all__ = ["RootTables", "StreamDataset", "TableSource"]

Table = Mapping[str, np.ndarray]
TableSource = Callable[[int, int, int], Iterable[Any]]


class RootTables:
    """The table source of ``DataLoader.from_root``: converter tasks, read on the fly.

    Planned once where it is built (opens every input, validates the schema); the tasks then
    travel to the DataLoader workers.

    Args:
        files: ROOT files, globs, folders or URLs (as for ``rntensor convert``).
        schema: a schema, its dict or YAML path.
        storage_options: fsspec options for remote inputs.
        step_size: entries per table, as a byte size (``"64 MB"``) or a count.
        shuffle, seed: permute the task order per epoch.
    """

    def __init__(
        self,
        files: Sequence[str],
        schema: Any,
        *,
        storage_options: Mapping[str, Any] | None = None,
        step_size: int | str = "64 MB",
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        from rntensor.convert import plan
        from rntensor.transform import column_layout

        self.files = list(files)
        self.schema = schema
        self.storage_options = dict(storage_options or {})
        self.step_size = step_size
        self.shuffle = shuffle
        self.seed = seed
        self.resolved, self.tasks, _ = plan(
            schema, self.files, storage_options=self.storage_options, shard_size=step_size
        )
        self.columns = column_layout(self.resolved)

    def __call__(self, part: int, num_parts: int, epoch: int) -> Iterator[Any]:
        from rntensor.convert import iter_tables

        order = np.arange(len(self.tasks))
        if self.shuffle:
            order = epoch_rng(self.seed, epoch, 4).permutation(len(self.tasks))
        mine = [self.tasks[i] for i in order[part::num_parts]]
        if not mine:
            return iter(())
        return iter_tables(
            self.schema, self.files, storage_options=self.storage_options,
            step_size=self.step_size, tasks=mine, resolved=self.resolved,
        )  # fmt: skip


def _origin(item: Any) -> tuple[Table, str | None]:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Mapping):
        table, origin = item
        if isinstance(origin, str):
            return table, origin
        src = getattr(origin, "source", None)
        name = getattr(src, "name", None)
        return table, os.path.basename(str(name)) if name is not None else None
    return item, None


def _num_rows(table: Table) -> int:
    if "_entry" in table:
        return len(table["_entry"])
    for k, v in table.items():
        if f"{k}_offsets" not in table and not k.endswith("_offsets"):
            return len(v)
    raise ValueError(f"cannot tell the number of rows of a table with columns {sorted(table)}")


class StreamDataset(_BatchDataset):
    """Batches from a table source; arguments as :class:`~rntensor.torch.dataset.CacheDataset`.

    Args:
        tables: the table source (see the module docstring).
        columns_meta: the manifest-style ``columns`` description of the tables
            (:func:`rntensor.transform.column_layout`).
        stats: per-output statistics for ``normalize`` (e.g. a cache manifest's ``stats``);
            without them, pass ``normalize=False``.
    """

    def __init__(
        self,
        tables: TableSource,
        columns_meta: Mapping[str, Mapping[str, Any]],
        *,
        stats: Mapping[str, Any] | None = None,
        schema: Mapping[str, Any] | None = None,
        batch_size: int = 1024,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 65536,
        split: str | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        columns: Sequence[str] | None = None,
        keep: bool = False,
        normalize: bool = True,
        masks: bool = True,
    ) -> None:
        super().__init__()
        self._init_batching(
            batch_size=batch_size, shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer,
            split=split, fractions=fractions, rank=rank, world_size=world_size,
            even_split=False, drop_last=drop_last,
        )  # fmt: skip
        if not callable(tables):
            raise TypeError(f"tables must be a callable (part, num_parts, epoch), got {tables!r}")
        self.tables = tables
        self.outputs = resolve_outputs(
            columns_meta, stats=stats, schema=schema, columns=columns, keep=keep,
            normalize=normalize, masks=masks, where="the streamed tables",
        )  # fmt: skip

    def __iter__(self) -> Iterator[Item | WorkerFailure]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.sync()
        if self.start_batch and workers > 1:
            raise ValueError(
                "an exact resume of a streaming loader needs num_workers=0 (with workers, the "
                "order depends on table sizes); convert to a cache for resumable multi-worker "
                "loading"
            )
        part = self.rank * workers + worker
        chunks = self.iter_packed(part, self.world_size * workers, self.chunk_batches)
        return worker_batches(chunks, worker, workers, self.rank, info is not None)

    def iter_packed(self, part: int = 0, num_parts: int = 1, chunk: int = 1) -> Iterator[Packed]:
        """The batches of consumer ``part`` of ``num_parts``, in chunks of ``chunk``."""
        helpers = Helpers(self.gather_threads) if self.gather_threads > 0 else None
        try:
            yield from in_turn(self._jobs(part, num_parts, chunk), helpers)
        finally:
            if helpers is not None:
                helpers.close()

    def _jobs(self, part: int, num_parts: int, chunk: int) -> Iterator[Callable[[], Packed]]:
        """One assembly per chunk, its tables bound when it is made (a later table release
        cannot take them from a job still waiting for a helper)."""
        rng = None
        if self.shuffle_buffer > 0:
            rng = epoch_rng(self.seed, self.epoch, _BUFFER, part, num_parts)
        cutter = BatchCutter(
            self.batch_size, drop_last=self.drop_last, buffer=self.shuffle_buffer, rng=rng
        )
        tables: dict[int, tuple[Table, np.ndarray | None]] = {}
        bounds = [0]
        starts = np.zeros(1, dtype=np.int64)

        def part_for(k: int, local: np.ndarray, index: slice | None) -> Part:
            table, rows = tables[k]
            return Part(table, local if rows is None else rows[local], index, k)

        chunker = Chunker(chunk, start=self.start_batch)

        def assemble(batches: list[np.ndarray]) -> Callable[[], Packed]:
            pos = np.concatenate(batches) if len(batches) > 1 else batches[0]
            sizes = [len(p) for p in batches]
            return partial(gather, self.outputs, chunk_parts(pos, sizes, starts, part_for), sizes)

        def emit(batches: Iterator[tuple[int, np.ndarray, int]]) -> Iterator[Callable[[], Packed]]:
            for b, pos, low in batches:
                done = chunker.add(b, pos)
                if done is not None:
                    yield assemble(done)
                water = chunker.low(low)
                for k in [k for k in tables if bounds[k + 1] <= water]:
                    del tables[k]

        for seq, item in enumerate(self.tables(part, num_parts, self.epoch)):
            table, name = _origin(item)
            rows = None
            if self.split is not None:
                if name is None or "_entry" not in table:
                    raise ValueError(
                        f"split={self.split!r} needs tables with an '_entry' column and their "
                        "source name, yielded as (table, name); or pass split=None"
                    )
                mask = split_mask(name, table["_entry"], self.split, self.fractions)
                rows = None if mask is None else np.flatnonzero(mask)
            n = _num_rows(table) if rows is None else len(rows)
            if self.shuffle:
                perm = epoch_rng(self.seed, self.epoch, _ROW_ORDER, part, seq).permutation(n)
                rows = perm if rows is None else rows[perm]
            k = len(bounds) - 1
            tables[k] = (table, rows)
            bounds.append(bounds[-1] + n)
            starts = np.asarray(bounds, dtype=np.int64)
            yield from emit(cutter.feed(n))
        yield from emit(cutter.finish())
        last = chunker.finish()
        if last is not None:
            yield assemble(last)
