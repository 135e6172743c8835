"""``CacheDataset``: one rank's batches of a converted cache, as a torch ``IterableDataset``.

The dataset yields chunks of consecutive batches, each chunk one byte buffer plus the layouts
of its batches (see :mod:`rntensor.torch.collate`; ragged columns as values +
``<name>_offsets``), so the torch DataLoader runs with ``batch_size=None``.  The order of an
epoch is fixed per rank by :mod:`rntensor.torch.plan`.  Worker ``w`` of ``n`` assembles chunks
``w, w + n, …`` counted from ``start``, and torch hands the workers' outputs back
round-robin, which is that same order, whatever ``n`` is.  Batches before ``start`` (a resume)
and other workers' batches cost index arithmetic only: their shards are never decoded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from rntensor.cache.read import CacheReader, open_cache
from rntensor.errors import CacheError
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
from rntensor.torch.plan import (
    _BUFFER,
    EvenSplit,
    Pieces,
    RankPlan,
    canonical_order,
    check_common,
    chunk_pieces,
    epoch_rng,
    num_batches,
    rank_rows,
    split_mask,
)

__all__ = ["CacheDataset", "chunk_parts"]


def chunk_parts(
    pos: np.ndarray, sizes: Sequence[int], starts: np.ndarray, part_for: Any
) -> list[Part]:
    """Cut a chunk's stream positions into :class:`Part` s, one per run of one segment.

    ``pos`` holds the chunk's batches (``sizes``) back to back.  A batch that spans several
    segments (tables) is sorted by position first, so each segment's rows of that batch are
    one contiguous run and are gathered straight into place (no gather-then-scatter); the
    batch holds the same events, in an order that is still deterministic.
    ``part_for(k, local, index)`` returns the Part of segment ``k`` for its local indices
    ``local``, taken into chunk positions ``index`` (``None``: the whole chunk, in order).
    """
    first = int(np.searchsorted(starts, pos.min(), side="right")) - 1
    last = int(np.searchsorted(starts, pos.max(), side="right")) - 1
    if first == last:
        return [part_for(first, pos - starts[first], None)]
    pos = pos.copy()
    seg = np.searchsorted(starts, pos, side="right") - 1
    cuts = [0]
    a = 0
    for size in sizes:
        b = a + int(size)
        if seg[a] != seg[b - 1] or (seg[a:b] != seg[a]).any():
            pos[a:b].sort()
            seg[a:b] = np.searchsorted(starts, pos[a:b], side="right") - 1
            cuts.extend((np.flatnonzero(np.diff(seg[a:b])) + a + 1).tolist())
        cuts.append(b)
        a = b
    parts = []
    for a, b in pairwise(cuts):
        k = int(seg[a])
        parts.append(part_for(k, pos[a:b] - starts[k], slice(a, b)))
    return parts


@dataclass
class _Open:
    arrays: dict[str, np.ndarray]
    rows: np.ndarray | None  # ordered split rows of the shard; None: identity
    shard: int


@dataclass
class _Piece:
    """Planned chunks: the segment and shard row of each position (see ``Pieces``)."""

    seg: np.ndarray
    rows: np.ndarray
    chunks: list[tuple[int, int, list[int]]]
    tables: dict[int, _Open]

    def parts(self, a: int, b: int) -> list[Part]:
        """The chunk ``[a, b)``, one Part per run of one segment."""
        seg, rows = self.seg[a:b], self.rows[a:b]
        if len(self.tables) > 1:
            cuts = [0, *(np.flatnonzero(seg[1:] != seg[:-1]) + 1).tolist(), b - a]
            if len(cuts) > 2:
                return [
                    Part(o.arrays, rows[x:y], slice(x, y), o.shard)
                    for x, y in pairwise(cuts)
                    for o in (self.tables[int(seg[x])],)
                ]
        o = self.tables[int(seg[0])]
        return [Part(o.arrays, rows, None, o.shard)]


def _group_spanning(
    pos: np.ndarray,
    seg: np.ndarray,
    rows: np.ndarray,
    chunks: Sequence[tuple[int, int, list[int]]],
    batch_size: int,
) -> None:
    """Sort each batch that spans several segments by position, in place: its rows of each
    segment become one run, gathered straight into place (same events, deterministic order)."""
    changes = np.flatnonzero(seg[1:] != seg[:-1]) + 1
    if not len(changes):
        return
    firsts = [np.arange(a, b, batch_size) for a, b, _ in chunks]
    starts = np.concatenate(firsts)
    ends = np.concatenate(
        [np.minimum(f + batch_size, b) for f, (_, b, _) in zip(firsts, chunks, strict=True)]
    )
    inside = np.searchsorted(starts, changes, side="right") - 1
    inside = inside[changes != starts[inside]]
    for j in np.unique(inside).tolist():
        x, y = int(starts[j]), int(ends[j])
        order = np.argsort(pos[x:y], kind="stable")
        pos[x:y], seg[x:y], rows[x:y] = pos[x:y][order], seg[x:y][order], rows[x:y][order]


class _BatchDataset(IterableDataset):
    """What :class:`CacheDataset` and :class:`~rntensor.torch.stream.StreamDataset` share: the
    batching arguments, checked and kept, and the epoch and resume point set by the loader."""

    def _init_batching(
        self,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        shuffle_buffer: int,
        split: str | None,
        fractions: Sequence[float],
        rank: int,
        world_size: int,
        even_split: bool | str | None,
        drop_last: bool,
    ) -> EvenSplit:
        """Check the arguments (:func:`~rntensor.torch.plan.check_common`) and keep them;
        returns the normalized ``even_split``."""
        even = check_common(
            batch_size=batch_size, seed=seed, shuffle_buffer=shuffle_buffer, split=split,
            fractions=fractions, rank=rank, world_size=world_size, even_split=even_split,
        )  # fmt: skip
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer) if shuffle else 0
        self.split = split
        self.fractions = tuple(float(f) for f in fractions)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self.start_batch = 0
        self.chunk_batches = 1  # batches assembled (and handed over) together; set by DataLoader
        self.gather_threads = 0  # helper threads (0: everything inline); ditto
        self._shared: torch.Tensor | None = None  # see share_state
        return even

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def share_state(self) -> None:
        """Keep (epoch, start batch, seed) in shared memory from now on, for persistent
        worker processes: they hold a copy of this dataset made when they started, and read
        the iteration's values from there (see :meth:`sync`)."""
        if self._shared is None:
            self._shared = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._shared[0], self._shared[1], self._shared[2] = self.epoch, self.start_batch, self.seed

    def sync(self) -> None:
        """In a worker: take the values of this iteration (see :meth:`share_state`)."""
        if self._shared is not None:
            self.epoch, self.start_batch, self.seed = (int(v) for v in self._shared.tolist())

    def iter_packed(self, part: int = 0, parts: int = 1, chunk: int = 1) -> Iterator[Packed]:
        """The chunks (``chunk`` consecutive batches each) of consumer ``part`` of ``parts``."""
        raise NotImplementedError

    def iter_numpy(
        self, part: int = 0, parts: int = 1, chunk: int = 1
    ) -> Iterator[dict[str, np.ndarray]]:
        """The numpy batches of consumer ``part`` of ``parts``, see :meth:`iter_packed`."""
        for packed in self.iter_packed(part, parts, chunk):
            yield from packed.batches


class CacheDataset(_BatchDataset):
    """One rank's batches of a converted cache.  Usually built by :class:`DataLoader`.

    Args:
        cache: a cache folder / URL or an open :class:`~rntensor.cache.read.CacheReader`.
        batch_size: events per batch.
        shuffle: permute shard order and rows per epoch and run the shuffle buffer.
        seed: with the epoch, determines the order (for a given world size).
        shuffle_buffer: how far, in events, the buffer may move an event (0: off).
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (every row).
        fractions: sizes of train, val and test.
        rank, world_size: this process's share (see :mod:`rntensor.torch.plan`).
        even_split: ``"drop"`` (or ``True``) / ``"repeat"``: every rank gets the same number of
            rows (and so batches); DDP needs it.
        drop_last: drop the last, incomplete batch of the rank.
        columns: columns to yield (default: every model column; masks come with their output).
        keep: also yield the ``keep`` columns, ``_entry`` and ``_shard`` (shard index).
        normalize: apply the manifest statistics to ``normalize: standard`` outputs.
        masks: yield the masks of padded outputs (``False``: the pad value marks empty slots).
        prefetch_shards: shards fetched ahead in the background.
        **open_options: for :func:`~rntensor.cache.read.open_cache` when ``cache`` is a path.
    """

    def __init__(
        self,
        cache: str | os.PathLike[str] | CacheReader,
        *,
        batch_size: int = 1024,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 65536,
        split: str | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        rank: int = 0,
        world_size: int = 1,
        even_split: bool | str | None = False,
        drop_last: bool = False,
        columns: Sequence[str] | None = None,
        keep: bool = False,
        normalize: bool = True,
        masks: bool = True,
        prefetch_shards: int = 2,
        **open_options: Any,
    ) -> None:
        super().__init__()
        self.even_split = self._init_batching(
            batch_size=batch_size, shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer,
            split=split, fractions=fractions, rank=rank, world_size=world_size,
            even_split=even_split, drop_last=drop_last,
        )  # fmt: skip
        self.reader = cache if isinstance(cache, CacheReader) else open_cache(cache, **open_options)
        self.prefetch_shards = int(prefetch_shards)
        meta = self.reader.columns
        self.outputs = resolve_outputs(
            meta,
            stats=self.reader.stats,
            schema=self.reader.schema,
            columns=columns,
            keep=keep,
            normalize=normalize,
            masks=masks,
            where=f"cache {self.reader.path!r}",
        )
        read = [o.name for o in self.outputs if o.kind != "shard"]
        if split is not None:
            if "_entry" not in meta:
                raise CacheError(
                    f"cache {self.reader.path!r} has no '_entry' column, needed for "
                    f"split={split!r}; re-run `rntensor convert`, or pass split=None"
                )
            read.append("_entry")
        self._read = list(dict.fromkeys(read))
        self.counts = self._count_rows()
        self.canonical = canonical_order(self.reader.shards)
        # (seed, epoch, shard) and its row permutation, computed ahead (_ready_next_epoch)
        self._perm_ahead: tuple[tuple[int, int, int], np.ndarray | None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_perm_ahead"] = None  # a worker process recomputes it; no need to ship it
        return state

    def _count_rows(self) -> np.ndarray:
        shards = self.reader.shards
        if self.split is None:
            return np.array([int(s["rows"]) for s in shards], dtype=np.int64)
        counts = np.empty(len(shards), dtype=np.int64)
        for i in range(len(shards)):
            mask = split_mask(
                self._source_name(i),
                self.reader.peek_column(i, "_entry"),
                self.split,
                self.fractions,
            )
            counts[i] = 0 if mask is None else int(np.count_nonzero(mask))
        return counts

    def _source_name(self, i: int) -> str:
        src = self.reader.shards[i].get("source") or {}
        return str(src.get("name") or os.path.basename(str(src.get("url", ""))))

    # -- sizes ------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        """Rows this rank reads per epoch."""
        return rank_rows(int(self.counts.sum()), self.rank, self.world_size, self.even_split)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return num_batches(self.num_rows, self.batch_size, self.drop_last)

    def plan(self, epoch: int | None = None) -> RankPlan:
        return RankPlan.build(
            self.counts,
            self.canonical,
            rank=self.rank,
            world_size=self.world_size,
            seed=self.seed,
            epoch=self.epoch if epoch is None else epoch,
            shuffle=self.shuffle,
            even_split=self.even_split,
        )

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Item | WorkerFailure]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.sync()
        chunks = self.iter_packed(worker, workers, self.chunk_batches)
        return worker_batches(chunks, worker, workers, self.rank, info is not None)

    def iter_packed(self, worker: int = 0, workers: int = 1, chunk: int = 1) -> Iterator[Packed]:
        """The batches of worker ``worker`` of ``workers`` from ``start_batch``, assembled in
        chunks of ``chunk`` consecutive batches; chunks go to the workers round-robin.

        With ``gather_threads``, helper threads plan the next piece of the epoch (positions →
        shard rows, shards opened) and assemble every other chunk (see
        :func:`~rntensor.torch.collate.in_turn`).
        """
        pieces = self._pieces(self.plan(), worker, workers, chunk)
        helpers = Helpers(self.gather_threads) if self.gather_threads > 0 else None
        try:
            yield from in_turn(self._jobs(pieces, helpers), helpers)
        finally:
            if helpers is not None:
                helpers.close()
            pieces.close()

    def _jobs(
        self, pieces: Iterator[_Piece], helpers: Helpers | None
    ) -> Iterator[Callable[[], Packed]]:
        """One assembly per chunk; with helpers, the next piece is planned in a helper."""
        ahead = helpers.ahead(partial(next, pieces, None)) if helpers is not None else None
        while True:
            piece = ahead.result() if ahead is not None else next(pieces, None)
            if piece is None:
                return
            if helpers is not None:
                ahead = helpers.ahead(partial(next, pieces, None))
            for a, b, sizes in piece.chunks:
                yield partial(gather, self.outputs, piece.parts(a, b), sizes)

    def _pieces(
        self, plan: RankPlan, worker: int, workers: int, chunk: int
    ) -> Generator[_Piece, None, None]:
        """The epoch's chunks, a piece at a time, mapped to shard rows (index arithmetic,
        shards opened and released; no row data touched)."""
        rng = None
        if self.shuffle_buffer > 0:
            rng = epoch_rng(self.seed, self.epoch, _BUFFER, self.rank, self.world_size)
        opened: dict[int, _Open] = {}
        for pc in chunk_pieces(
            plan.num_rows, self.batch_size, drop_last=self.drop_last, buffer=self.shuffle_buffer,
            rng=rng, chunk=chunk, start=self.start_batch, worker=worker, workers=workers,
        ):  # fmt: skip
            if len(pc.pos):  # else no chunk of this worker in the piece
                yield self._map(plan, opened, pc)
            for k in [k for k in opened if plan.start[k + 1] <= pc.water]:
                del opened[k]  # wholly behind the shuffle window: release the shard
        self._ready_next_epoch()

    def _map(self, plan: RankPlan, opened: dict[int, _Open], pc: Pieces) -> _Piece:
        """The segment and shard row of every position of ``pc`` (shards opened)."""
        pos = pc.pos
        lo, hi = int(pos.min()), int(pos.max())
        k0 = int(np.searchsorted(plan.start, lo, side="right")) - 1
        k1 = int(np.searchsorted(plan.start, hi, side="right")) - 1
        tables = {k: self._opened(plan, opened, k) for k in range(k0, k1 + 1)}
        # the shard row of every position in [lo, hi], then one lookup per position
        spans = []
        for k, o in tables.items():
            first = int(plan.lo[k]) - int(plan.start[k])
            a, b = max(lo, int(plan.start[k])) + first, min(hi + 1, int(plan.start[k + 1])) + first
            spans.append(np.arange(a, b, dtype=np.int64) if o.rows is None else o.rows[a:b])
        rows = (spans[0] if len(spans) == 1 else np.concatenate(spans))[pos - lo]
        seg = np.full(len(pos), k0, dtype=np.int64)
        for k in range(k0 + 1, k1 + 1):
            seg += pos >= plan.start[k]
        if k1 > k0:
            _group_spanning(pos, seg, rows, pc.chunks, self.batch_size)
        return _Piece(seg, rows, pc.chunks, tables)

    def _ready_next_epoch(self) -> None:
        """Permute the rows of the next epoch's first shard now (the planning thread has
        little else to do at the end of an epoch), so the next epoch starts without waiting
        for it; used if the next epoch is ``epoch + 1`` from the start, as usual."""
        if not self.shuffle:
            return
        nxt = self.plan(self.epoch + 1)
        if len(nxt.shard):
            shard = int(nxt.shard[0])
            key = (nxt.seed, nxt.epoch, shard)
            self._perm_ahead = (key, nxt.row_permutation(shard, int(self.counts[shard])))

    def _opened(self, plan: RankPlan, opened: dict[int, _Open], k: int) -> _Open:
        """Segment ``k``'s shard, opened on first use (and the next shards prefetched)."""
        o = opened.get(k)
        if o is None:
            o = opened[k] = self._open(plan, int(plan.shard[k]))
            ahead = plan.shard[k + 1 : k + 1 + self.prefetch_shards]
            if len(ahead):
                self.reader.prefetch(int(s) for s in ahead)
        return o

    def _open(self, plan: RankPlan, shard: int) -> _Open:
        arrays = self.reader.read_shard(shard, self._read)
        rows = None
        if self.split is not None:
            mask = split_mask(
                self._source_name(shard), arrays["_entry"], self.split, self.fractions
            )
            rows = None if mask is None else np.flatnonzero(mask)
        count = len(arrays["_entry"]) if rows is None and "_entry" in arrays else None
        expected = int(self.counts[shard])
        n = len(rows) if rows is not None else (count if count is not None else expected)
        if n != expected:
            raise CacheError(
                f"shard holds {n} rows of split {self.split!r}, {expected} when the loader "
                "started: the cache changed under the loader; restart it",
                context=self.reader.shard_context(shard),
            )
        ready = self._perm_ahead
        if ready is not None and ready[0] == (plan.seed, plan.epoch, shard):
            perm, self._perm_ahead = ready[1], None
        else:
            perm = plan.row_permutation(shard, expected)
        if perm is not None:
            rows = perm if rows is None else rows[perm]
        return _Open(arrays, rows, shard)
