"""Which events a rank reads, in which order: splits, rank partition, shuffle.  Numpy only.

The order of one epoch is defined for a rank, independently of the DataLoader workers:

1. **Split.** Row ``(source name, _entry)`` belongs to the split whose interval of ``fractions``
   holds ``u = splitmix64((crc32(name) << 32) ^ entry) / 2**64``: stable across runs, shard
   layouts and input order.
2. **Global stream.** Shards are taken in a per-epoch permutation of their canonical order
   (sorted by source name, entry range, key; not the manifest order), and the split rows of each
   shard in a per-(epoch, shard) permutation.  Without ``shuffle`` both are the identity and the
   manifest order is used.
3. **Rank partition.** Rank ``r`` of ``W`` gets the contiguous slice ``[r N / W, (r+1) N / W)`` of
   the global stream (``N`` split rows): ranks read disjoint shards except at the boundaries.
   ``even_split="drop"`` gives every rank ``N // W`` rows (the last ``N % W`` rows of the
   permuted stream are skipped this epoch); ``"repeat"`` gives every rank ``ceil(N / W)`` rows,
   wrapping around to the start of the stream (a few rows are seen twice).
4. **Shuffle buffer.** Block ``k`` of ``g`` rank stream positions (``g = min(64, buffer //
   1024)``, at least 1) gets the key ``k + floor(buffer / g * u_k)`` with ``u_k`` the ``k``-th
   double of a (seed, epoch, rank) generator, and blocks are emitted in key order, ties by
   index (a streaming "jitter sort", see :class:`WindowShuffle`): an event moves less than
   ``buffer`` places, so only the shards under a window of ``buffer`` events are ever open.
5. **Batches.** Batch ``b`` is positions ``[b B, (b+1) B)`` of that order.  Workers take batches
   round-robin; the order never depends on the number of workers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np

__all__ = [
    "SPLITS",
    "check_common",
    "check_int",
    "num_batches",
    "rank_rows",
    "RankPlan",
    "BatchCutter",
    "Chunker",
    "Pieces",
    "chunk_pieces",
    "WindowShuffle",
    "batch_positions",
    "canonical_order",
    "epoch_rng",
    "row_uniform",
    "split_mask",
]

SPLITS = ("train", "val", "test")
EvenSplit = Literal["drop", "repeat"] | None

# generator purposes, mixed into the seed so that streams are independent
_SHARD_ORDER, _ROW_ORDER, _BUFFER = 1, 2, 3


def epoch_rng(seed: int, epoch: int, purpose: int, *extra: int) -> np.random.Generator:
    """A generator determined by (seed, epoch, purpose, extra); platform independent."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, epoch, purpose, *extra]))
    )


def row_uniform(name: str, entries: np.ndarray) -> np.ndarray:
    """``splitmix64((crc32(name) << 32) ^ entry)`` mapped to ``[0, 1)``, vectorized."""
    x = np.uint64(zlib.crc32(name.encode()) << 32) ^ np.asarray(entries).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def split_bounds(split: str, fractions: Sequence[float]) -> tuple[float, float]:
    """The ``[lo, hi)`` interval of ``split``; the last split extends past 1."""
    i = SPLITS.index(split)
    edges = np.concatenate([[0.0], np.cumsum(fractions)])
    hi = float(edges[i + 1]) if i + 1 < len(SPLITS) else 2.0
    return float(edges[i]), hi


def split_mask(
    name: str, entries: np.ndarray, split: str | None, fractions: Sequence[float]
) -> np.ndarray | None:
    """Which rows of one source belong to ``split`` (``None``: all of them)."""
    if split is None:
        return None
    lo, hi = split_bounds(split, fractions)
    u = row_uniform(name, entries)
    return (u >= lo) & (u < hi)


def canonical_order(shards: Sequence[dict[str, Any]]) -> np.ndarray:
    """Shard indices sorted by (source name, entry_start, entry_stop, key)."""

    def key(i: int) -> tuple[Any, ...]:
        s = shards[i]
        src = s.get("source") or {}
        return (
            str(src.get("name", "")),
            int(s.get("entry_start", 0)),
            int(s.get("entry_stop", 0)),
            str(s.get("key", s.get("path", ""))),
        )

    return np.array(sorted(range(len(shards)), key=key), dtype=np.int64)


@dataclass(frozen=True)
class RankPlan:
    """One rank's stream for one epoch: segments of shards' ordered split rows.

    Segment ``k`` holds positions ``[start[k], start[k+1])`` of the rank stream, which are rows
    ``lo[k] + j`` of shard ``shard[k]``'s ordered split rows.
    """

    shard: np.ndarray
    lo: np.ndarray
    start: np.ndarray  # len(shard) + 1 boundaries
    shard_rank: np.ndarray  # canonical rank of every shard: seeds its row permutation
    seed: int
    epoch: int
    shuffle: bool

    @property
    def num_rows(self) -> int:
        return int(self.start[-1])

    @classmethod
    def build(
        cls,
        counts: np.ndarray,
        canonical: np.ndarray,
        *,
        rank: int,
        world_size: int,
        seed: int,
        epoch: int,
        shuffle: bool,
        even_split: EvenSplit,
    ) -> RankPlan:
        counts = np.asarray(counts, dtype=np.int64)
        shard_rank = np.empty(len(counts), dtype=np.int64)
        shard_rank[canonical] = np.arange(len(counts))
        if shuffle:
            order = canonical[epoch_rng(seed, epoch, _SHARD_ORDER).permutation(len(canonical))]
        else:
            order = np.arange(len(counts), dtype=np.int64)
        order = order[counts[order] > 0]
        edges = np.concatenate([[0], np.cumsum(counts[order])])
        n = int(edges[-1])
        if even_split == "drop":
            a, b = rank * (n // world_size), (rank + 1) * (n // world_size)
        elif even_split == "repeat":
            m = -(-n // world_size)
            a, b = rank * m, (rank + 1) * m
        else:
            a, b = rank * n // world_size, (rank + 1) * n // world_size
        shards, los, lens = [], [], []
        while b > a and n > 0:  # pieces of [a, b) over the stream repeated end to end
            base = (a // n) * n
            pa_, pb = a - base, min(b - base, n)
            k0 = int(np.searchsorted(edges, pa_, side="right")) - 1
            k1 = int(np.searchsorted(edges, pb, side="left"))
            for k in range(k0, k1):
                lo = max(pa_, int(edges[k])) - int(edges[k])
                hi = min(pb, int(edges[k + 1])) - int(edges[k])
                if hi > lo:
                    shards.append(int(order[k]))
                    los.append(lo)
                    lens.append(hi - lo)
            a = base + pb
        start = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)]).astype(np.int64)
        return cls(
            shard=np.array(shards, dtype=np.int64),
            lo=np.array(los, dtype=np.int64),
            start=start,
            shard_rank=shard_rank,
            seed=seed,
            epoch=epoch,
            shuffle=shuffle,
        )

    def row_permutation(self, shard: int, count: int) -> np.ndarray | None:
        """The order of shard ``shard``'s ``count`` split rows this epoch (``None``: identity)."""
        if not self.shuffle:
            return None
        rng = epoch_rng(self.seed, self.epoch, _ROW_ORDER, int(self.shard_rank[shard]))
        return rng.permutation(count)


class WindowShuffle:
    """Streaming jitter sort, by blocks: block ``k`` (stream positions ``[k g, (k+1) g)``)
    gets the key ``k + floor((buffer / g) * u_k)``, ties broken by ``k``; blocks are emitted in
    key order, the positions of a block in order.

    ``g`` is ``min(64, buffer // 1024)`` (at least 1) unless given: a large buffer moves
    blocks, which costs 1/g of the sort and random draws of moving every position, and loses
    nothing where the stream's rows are in random order already (every shard's rows are
    permuted per epoch): a batch still draws from the whole window.  Buffers below 2048 move
    single positions.

    Keys are packed into one int64, ``(k + j) << b | (k mod 2**b)`` with ``2**b >= buffer /
    g``, which is unique, so a plain (fast, unstable) sort gives a platform-independent order
    and ``k`` is decoded from the sorted key without an ``argsort``.

    Args:
        buffer: how far (in events) an event may move; 0 keeps the order.
        rng: the source of the ``u_k`` (doubles consumed in block order, so the output does
            not depend on how positions are pushed).
        block: ``g``; default as above.
    """

    def __init__(
        self, buffer: int, rng: np.random.Generator | None, block: int | None = None
    ) -> None:
        self.buffer = buffer if rng is not None else 0
        self.rng = rng
        self.block = max(1, min(64, self.buffer // 1024)) if block is None else int(block)
        self.pushed = 0
        self._span = self.buffer // self.block  # how far a block may move, in blocks
        self._keyed = 0  # blocks given a key
        self._bits = max(1, int(self._span).bit_length())
        self._keys = np.empty(0, dtype=np.int64)  # the pool: packed keys not yet emitted

    @property
    def low_water(self) -> int:
        """The smallest position not yet emitted."""
        if self.buffer <= 0:
            return self.pushed
        if len(self._keys):
            return int(self._decode(self._keys).min()) * self.block
        return self._keyed * self.block

    def _decode(self, keys: np.ndarray) -> np.ndarray:
        low = np.int64((1 << self._bits) - 1)
        v = keys >> np.int64(self._bits)
        return v - ((v - (keys & low)) & low)

    def _key(self, stop: int) -> np.ndarray:
        """Keys for blocks ``[keyed, stop)``, added to the pool."""
        k = np.arange(self._keyed, stop, dtype=np.int64)
        self._keyed = stop
        assert self.rng is not None
        jitter = (self.rng.random(len(k)) * self._span).astype(np.int64)
        low = np.int64((1 << self._bits) - 1)
        keys = ((k + jitter) << np.int64(self._bits)) | (k & low)
        return np.concatenate([self._keys, keys]) if len(self._keys) else keys

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        blocks = self._decode(np.sort(keys))
        g = self.block
        if g == 1:
            return blocks
        pos = (blocks[:, None] * g + np.arange(g, dtype=np.int64)).ravel()
        return pos[pos < self.pushed] if self.pushed % g else pos  # a last, partial block

    def push(self, count: int) -> np.ndarray:
        """Add the next ``count`` positions; return the positions now final, in order."""
        if self.buffer <= 0 or self.rng is None:
            pos = np.arange(self.pushed, self.pushed + count, dtype=np.int64)
            self.pushed += count
            return pos
        self.pushed += count
        done = self.pushed // self.block  # complete blocks
        keys = self._key(done) if done > self._keyed else self._keys
        ready = keys < (done << self._bits)  # every later key is at least this
        self._keys = keys[~ready]
        return self._positions(keys[ready])

    def flush(self) -> np.ndarray:
        """Emit whatever is left (a last, partial block too), in order."""
        if self.buffer <= 0 or self.rng is None:
            return np.empty(0, dtype=np.int64)
        end = -(-self.pushed // self.block)
        keys = self._key(end) if end > self._keyed else self._keys
        self._keys = keys[:0]
        return self._positions(keys)


class BatchCutter:
    """Cut a stream of positions, shuffled by a :class:`WindowShuffle`, into batches.

    ``feed(count)`` adds the next ``count`` stream positions and yields the batches now complete;
    ``finish()`` yields the rest.  Every batch comes as ``(index, positions, low water)``: ``low
    water`` is the smallest position any later batch can hold, so tables wholly before it can be
    released.  Only index arithmetic: skipping batches decodes nothing.
    """

    def __init__(
        self, batch_size: int, *, drop_last: bool, buffer: int, rng: np.random.Generator | None
    ) -> None:
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.shuffle = WindowShuffle(buffer if rng is not None else 0, rng)
        self.batches = 0
        self._pending = np.empty(0, dtype=np.int64)

    def feed(self, count: int) -> Iterator[tuple[int, np.ndarray, int]]:
        return self._cut(self.shuffle.push(count), final=False)

    def finish(self) -> Iterator[tuple[int, np.ndarray, int]]:
        return self._cut(self.shuffle.flush(), final=True)

    def _cut(self, fresh: np.ndarray, *, final: bool) -> Iterator[tuple[int, np.ndarray, int]]:
        pending = np.concatenate([self._pending, fresh]) if len(self._pending) else fresh
        bs = self.batch_size
        k = len(pending) // bs
        if final and not self.drop_last and len(pending) % bs:
            k += 1
        self._pending = pending[k * bs :] if not final else pending[:0]
        first, self.batches = self.batches, self.batches + k
        return self._emit(pending, k, first, self.shuffle.low_water)

    def _emit(
        self, pending: np.ndarray, k: int, first: int, water: int
    ) -> Iterator[tuple[int, np.ndarray, int]]:
        if k == 0:
            return
        bs = self.batch_size
        suffix = np.minimum.accumulate(pending[::-1])[::-1]
        for j in range(k):
            cut = (j + 1) * bs
            low = min(int(suffix[cut]), water) if cut < len(pending) else water
            yield first + j, pending[j * bs : cut], low


class Chunker:
    """Groups consecutive batches into chunks of ``size`` (assembled together) and keeps those
    of worker ``worker`` of ``workers``: chunk ``c``, counted from batch ``start``, is worker
    ``c % workers``'s.

    ``add`` returns a chunk's batch positions when it completes; :meth:`low` lowers a low-water
    mark (see :class:`BatchCutter`) to cover the batches held for an incomplete chunk.
    """

    def __init__(self, size: int, *, start: int = 0, worker: int = 0, workers: int = 1) -> None:
        self.size, self.start, self.worker, self.workers = size, start, worker, workers
        self._pending: list[np.ndarray] = []
        self._low = 0

    def add(self, index: int, positions: np.ndarray) -> list[np.ndarray] | None:
        if index < self.start or ((index - self.start) // self.size) % self.workers != self.worker:
            return None
        if not self._pending:
            self._low = int(positions.min())
        else:
            self._low = min(self._low, int(positions.min()))
        self._pending.append(positions)
        return self.finish() if (index - self.start) % self.size == self.size - 1 else None

    def finish(self) -> list[np.ndarray] | None:
        """The incomplete chunk at the end of the stream, if any."""
        chunk, self._pending = self._pending, []
        return chunk or None

    def low(self, water: int) -> int:
        return min(water, self._low) if self._pending else water


@dataclass(frozen=True)
class Pieces:
    """A stretch of an epoch's chunks (see :func:`chunk_pieces`).

    ``pos[a:b]`` are the stream positions of chunk ``(a, b, sizes)`` of ``chunks``, its
    batches (of ``sizes``) back to back; every later piece holds positions ``>= water`` only.
    """

    pos: np.ndarray
    chunks: list[tuple[int, int, list[int]]]
    water: int


def chunk_pieces(
    num_rows: int,
    batch_size: int,
    *,
    drop_last: bool,
    buffer: int,
    rng: np.random.Generator | None,
    chunk: int,
    start: int = 0,
    worker: int = 0,
    workers: int = 1,
    piece: int = 1 << 18,
    first_piece: int = 1 << 16,
) -> Iterator[Pieces]:
    """The chunks of ``worker`` of ``workers`` (chunk ``c``, counted from batch ``start``,
    is worker ``c % workers``'s), a piece of the stream at a time: the order of
    :class:`BatchCutter` and :class:`Chunker`, computed with a few array operations per
    ``piece`` stream positions instead of per batch.  The first piece is smaller
    (``first_piece``), so that the first batch comes sooner.
    """
    bs = batch_size
    total = min(num_rows, num_batches(num_rows, bs, drop_last) * bs)  # positions emitted
    rows = chunk * bs
    skip = start * bs  # emissions before the resume point: index arithmetic only
    shuffle = WindowShuffle(buffer if rng is not None else 0, rng)
    carry = np.empty(0, dtype=np.int64)
    done = 0  # emission index of carry[0]
    pushed, step = 0, first_piece
    while pushed < num_rows:
        n = min(step, num_rows - pushed)
        step = piece
        fresh = shuffle.push(n)
        pushed += n
        final = pushed == num_rows
        if final:
            fresh = np.concatenate([fresh, shuffle.flush()])
        emitted = np.concatenate([carry, fresh]) if len(carry) else fresh
        if done < skip:
            drop = min(skip - done, len(emitted))
            emitted, done = emitted[drop:], done + drop
        end = min(done + len(emitted), total) if final else done + len(emitted)
        count = (end - done) // rows
        if final and (end - done) % rows:
            count += 1
        cut = min(count * rows, end - done)
        first = (done - skip) // rows  # the chunk index of emitted[0]
        chunks, keep = [], []
        for c in range(first, first + count):
            if c % workers != worker:
                continue
            a, b = (c - first) * rows, min((c - first + 1) * rows, end - done)
            keep.append((a, b))
            chunks.append([min(bs, b - x) for x in range(a, b, bs)])
        if workers == 1:
            pos = emitted[:cut]
            spans = keep
        else:
            pos = np.concatenate([emitted[a:b] for a, b in keep]) if keep else emitted[:0]
            edges = np.cumsum([0] + [b - a for a, b in keep]).tolist()
            spans = list(pairwise(edges))
        carry = emitted[cut:] if not final else emitted[:0]
        water = shuffle.low_water
        if len(carry):
            water = min(water, int(carry.min()))
        done += cut
        yield Pieces(pos, [(a, b, s) for (a, b), s in zip(spans, chunks, strict=True)], water)


def batch_positions(
    num_rows: int,
    batch_size: int,
    *,
    drop_last: bool,
    buffer: int,
    rng: np.random.Generator | None,
) -> Iterator[tuple[int, np.ndarray, int]]:
    """Every batch of a stream of ``num_rows`` positions, see :class:`BatchCutter`."""
    cutter = BatchCutter(batch_size, drop_last=drop_last, buffer=buffer, rng=rng)
    chunk = max(buffer, batch_size, 4096)
    for start in range(0, num_rows, chunk):
        yield from cutter.feed(min(chunk, num_rows - start))
    yield from cutter.finish()


def check_int(name: str, value: object, low: int) -> int:
    """``value`` as an int, or a ValueError naming ``name`` unless it is an int >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_common(
    *,
    batch_size: int,
    seed: int,
    shuffle_buffer: int,
    split: str | None,
    fractions: Sequence[float],
    rank: int,
    world_size: int,
    even_split: bool | str | None,
) -> EvenSplit:
    """Validate the arguments shared by the datasets; returns the normalized ``even_split``."""
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("seed", seed, 0),
        ("shuffle_buffer", shuffle_buffer, 0),
        ("world_size", world_size, 1),
    ):
        check_int(name, value, low)
    if (
        isinstance(rank, bool)
        or not isinstance(rank, (int, np.integer))
        or not 0 <= rank < world_size
    ):
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (len(SPLITS),) or (f < 0).any() or abs(f.sum() - 1.0) > 1e-6:
        raise ValueError(
            f"fractions must be {len(SPLITS)} non-negative numbers (train, val, test) summing "
            f"to 1, got {tuple(fractions)!r}"
        )
    if even_split is True:
        return "drop"
    if even_split is False or even_split is None:
        return None
    if even_split in ("drop", "repeat"):
        return even_split  # type: ignore[return-value]
    raise ValueError(f"even_split must be False, True, 'drop' or 'repeat', got {even_split!r}")


def rank_rows(total: int, rank: int, world_size: int, even_split: EvenSplit) -> int:
    """How many rows rank ``rank`` reads per epoch (see :mod:`rntensor.torch.plan`)."""
    if even_split == "drop":
        return total // world_size
    if even_split == "repeat":
        return -(-total // world_size) if total else 0
    return (rank + 1) * total // world_size - rank * total // world_size


def num_batches(rows: int, batch_size: int, drop_last: bool) -> int:
    return rows // batch_size if drop_last else -(-rows // batch_size)
