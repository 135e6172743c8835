"""``DataLoader``: a converted cache (or a stream of ROOT tables) → batches of tensors.

Built on ``torch.utils.data.DataLoader`` (worker processes, pinning) over an
``IterableDataset`` that yields whole batches.  What this class adds: rank detection, epochs,
the exact mid-epoch resume, the device prefetcher and the final touches (nested tensors,
one-hot labels).

Resume contract: ``state_dict()`` records (epoch, seed, batches handed to the consumer,
world size, batch size); a loader given it with ``load_state_dict`` yields exactly the remaining
batches of that epoch.  The fast-forward replays index arithmetic only: the skipped batches'
shards are neither read nor decoded.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.utils.data

from rntensor.cache.read import CacheReader
from rntensor.torch.collate import WorkerFailure, unpack
from rntensor.torch.dataset import CacheDataset
from rntensor.torch.device import DevicePrefetcher, finalize
from rntensor.torch.plan import check_int
from rntensor.torch.stream import RootTables, StreamDataset, TableSource

__all__ = ["DataLoader"]

STATE_VERSION = 1
# what fixes the order of an epoch, besides seed and epoch ("split_rows": the events of the
# split, which change when the cache does)
_MUST_MATCH = (
    "world_size", "batch_size", "shuffle", "shuffle_buffer", "split", "fractions", "drop_last",
    "even_split", "split_rows",
)  # fmt: skip


def _distributed(rank: int | None, world_size: int | None) -> tuple[int, int, bool]:
    if rank is not None and world_size is not None:
        return rank, world_size, False
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return (
            dist.get_rank() if rank is None else rank,
            dist.get_world_size() if world_size is None else world_size,
            True,
        )
    return rank or 0, world_size or 1, False


class DataLoader:
    """Batches of a converted cache for training: ``dict[str, Tensor]`` per batch.

    Args:
        cache: cache folder or URL, or an open :class:`~rntensor.cache.read.CacheReader`.
        batch_size: events per batch.
        shuffle: permute shards and rows per epoch and run the shuffle buffer.
        seed: with the epoch (:meth:`set_epoch`), determines the order for a given world size,
            whatever ``num_workers`` is.
        shuffle_buffer: how far, in events, the buffer moves an event; peak memory is this
            window plus the shards under it.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None``; see ``fractions``.
        fractions: (train, val, test), by a hash of (source file name, ``_entry``).
        num_workers: DataLoader worker processes (0: in this process).
        rank, world_size: this process's share; default from ``torch.distributed`` when it is
            initialised, else 0 and 1.
        even_split: ``"drop"`` (or ``True``): every rank gets ``N // world_size`` events, the
            last ``N % world_size`` of the epoch's permuted stream are skipped that epoch;
            ``"repeat"``: ``ceil(N / world_size)`` each, a few events seen twice.  DDP needs one.
        drop_last: drop each rank's last, incomplete batch.
        columns: columns to yield (default every model column; a padded output brings its mask).
        keep: also yield the ``keep`` columns, ``_entry`` and ``_shard``.
        normalize: apply the manifest statistics to ``normalize: standard`` outputs (padded
            slots keep the pad value; use the mask).
        masks: yield the mask of every padded output (``<name>_mask``, ``(B, L)`` bool);
            ``False`` leaves them out (fewer bytes per event: the pad value marks empty
            slots), unless ``columns`` names them.
        one_hot: labels with ``classes`` as one-hot float32 ``(B, classes)``.
        ragged: ``"nested"`` (jagged-layout nested tensor ``(B, j, F)``) or ``"offsets"``
            (values ``(total, F)`` + ``<name>_offsets`` ``(B + 1,)``).
        pin_memory: pin host batches (default: when ``device`` is CUDA).
        device: move batches there with asynchronous copies on a side stream.
        device_prefetch: chunks (see ``chunk_batches``) in flight to the device.
        prefetch_factor: chunks each worker prepares ahead.
        multiprocessing_context: for the workers (``"fork"``, ``"spawn"``, ``"forkserver"``).
        persistent_workers: keep the worker processes from one epoch to the next (no start-up
            per epoch); the epoch, resume point and seed reach them through shared memory.
            Stop them with :meth:`close` (or ``with DataLoader(...) as loader:``).
        timeout_s: how long to wait for a worker's batch (0: forever).
        chunk_batches: consecutive batches assembled together: one gather per column, one
            handover from a worker, one pin, one device copy (torch's fixed cost per worker
            handover is ~0.1-1 ms); default ``min(8, 8192 // batch_size)``, at least 1.
        gather_threads: helper threads of each loading process (this one with
            ``num_workers=0``, else every worker) that plan the next stretch of the epoch
            (positions to shard rows, shards opened) and assemble every other chunk beside
            the iterating thread (the gathers release the GIL).  Default (``None``): 1 with
            ``num_workers=0`` on a machine with more than one CPU, else 0 (workers are
            processes already).  0: everything in the assembling thread.
        **open_options: ``storage_options``, ``schema_fingerprint``, ``local_cache``,
            ``local_cache_bytes``, ``verify`` for :func:`~rntensor.cache.read.open_cache`.
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
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        even_split: bool | str = False,
        drop_last: bool = False,
        columns: Sequence[str] | None = None,
        keep: bool = False,
        normalize: bool = True,
        masks: bool = True,
        one_hot: bool = False,
        ragged: Literal["nested", "offsets"] = "nested",
        pin_memory: bool | None = None,
        device: str | torch.device | None = None,
        device_prefetch: int = 2,
        prefetch_factor: int = 2,
        multiprocessing_context: str | None = None,
        persistent_workers: bool = False,
        timeout_s: float = 0.0,
        chunk_batches: int | None = None,
        gather_threads: int | None = None,
        **open_options: Any,
    ) -> None:
        rank, world_size, from_dist = _distributed(rank, world_size)
        if from_dist and world_size > 1 and not even_split:
            warnings.warn(
                "torch.distributed is initialised but even_split is off: ranks may get "
                "different numbers of batches and DDP would hang; pass even_split='drop' or "
                "'repeat'",
                stacklevel=2,
            )
        dataset = CacheDataset(
            cache, batch_size=batch_size, shuffle=shuffle, seed=seed,
            shuffle_buffer=shuffle_buffer, split=split, fractions=fractions, rank=rank,
            world_size=world_size, even_split=even_split, drop_last=drop_last,
            columns=columns, keep=keep, normalize=normalize, masks=masks, **open_options,
        )  # fmt: skip
        self._setup(
            dataset, num_workers=num_workers, one_hot=one_hot, ragged=ragged,
            pin_memory=pin_memory, device=device, device_prefetch=device_prefetch,
            prefetch_factor=prefetch_factor, multiprocessing_context=multiprocessing_context,
            timeout_s=timeout_s, chunk_batches=chunk_batches, gather_threads=gather_threads,
            persistent_workers=persistent_workers,
        )  # fmt: skip

    def _setup(
        self,
        dataset: CacheDataset | StreamDataset,
        *,
        num_workers: int,
        one_hot: bool,
        ragged: str,
        pin_memory: bool | None,
        device: str | torch.device | None,
        device_prefetch: int,
        prefetch_factor: int,
        multiprocessing_context: str | None,
        timeout_s: float,
        chunk_batches: int | None,
        gather_threads: int | None = None,
        persistent_workers: bool = False,
    ) -> None:
        num_workers = check_int("num_workers", num_workers, 0)
        if ragged not in ("nested", "offsets"):
            raise ValueError(f"ragged must be 'nested' or 'offsets', got {ragged!r}")
        prefetch_factor = check_int("prefetch_factor", prefetch_factor, 1)
        device_prefetch = check_int("device_prefetch", device_prefetch, 1)
        if timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s!r}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} but torch sees no CUDA device")
        self.dataset = dataset
        self.num_workers = num_workers
        self.ragged = ragged
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else bool(pin_memory)
        self.device_prefetch = device_prefetch
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.timeout_s = float(timeout_s)
        self._ragged = [o.name for o in dataset.outputs if o.kind == "ragged"]
        self._one_hot = {
            o.name: int(o.classes) for o in dataset.outputs if o.kind == "label" and o.classes
        }
        if one_hot and not self._one_hot:
            raise ValueError("one_hot=True but no label column has 'classes'")
        if not one_hot:
            self._one_hot = {}
        self.epoch = 0
        self._yielded = 0
        self._resume = 0
        if chunk_batches is None:
            chunk_batches = max(1, min(8, 8192 // dataset.batch_size))
        self.chunk_batches = check_int("chunk_batches", chunk_batches, 1)
        if gather_threads is None:
            gather_threads = 1 if num_workers == 0 and (os.cpu_count() or 1) > 1 else 0
        self.gather_threads = check_int("gather_threads", gather_threads, 0)
        self.persistent_workers = bool(persistent_workers) and num_workers > 0
        self._workers: torch.utils.data.DataLoader | None = None  # the persistent ones

    @classmethod
    def from_root(
        cls,
        files: Sequence[str] | str,
        schema: Any,
        *,
        tables: TableSource | None = None,
        storage_options: Mapping[str, Any] | None = None,
        step_size: int | str = "64 MB",
        stats: Mapping[str, Any] | None = None,
        batch_size: int = 1024,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 65536,
        split: str | None = None,
        fractions: Sequence[float] = (0.8, 0.1, 0.1),
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        columns: Sequence[str] | None = None,
        keep: bool = False,
        normalize: bool = True,
        masks: bool = True,
        **loader_options: Any,
    ) -> DataLoader:
        """Stream ROOT files without a cache (see :mod:`rntensor.torch.stream`).

        ``tables`` replaces the ROOT reader with any table source; then ``schema`` is the
        manifest-style ``columns`` description of its tables.  ``stats`` (e.g. a cache
        manifest's) enables ``normalize``; without them, outputs are left raw only if
        ``normalize=False``.  Other keywords as for the constructor (``num_workers``,
        ``device``, ``ragged``, ``one_hot``, ...).
        """
        rank, world_size, _ = _distributed(rank, world_size)
        if tables is None:
            root = RootTables(
                [files] if isinstance(files, str) else list(files), schema,
                storage_options=storage_options, step_size=step_size, shuffle=shuffle, seed=seed,
            )  # fmt: skip
            tables, meta, schema_dict = root, root.columns, None
        else:
            meta, schema_dict = schema, None
        dataset = StreamDataset(
            tables, meta, stats=stats, schema=schema_dict, batch_size=batch_size,
            shuffle=shuffle, seed=seed, shuffle_buffer=shuffle_buffer, split=split,
            fractions=fractions, rank=rank, world_size=world_size, drop_last=drop_last,
            columns=columns, keep=keep, normalize=normalize, masks=masks,
        )  # fmt: skip
        self = cls.__new__(cls)
        self._setup(
            dataset,
            num_workers=loader_options.pop("num_workers", 0),
            one_hot=loader_options.pop("one_hot", False),
            ragged=loader_options.pop("ragged", "nested"),
            pin_memory=loader_options.pop("pin_memory", None),
            device=loader_options.pop("device", None),
            device_prefetch=loader_options.pop("device_prefetch", 2),
            prefetch_factor=loader_options.pop("prefetch_factor", 2),
            multiprocessing_context=loader_options.pop("multiprocessing_context", None),
            timeout_s=loader_options.pop("timeout_s", 0.0),
            chunk_batches=loader_options.pop("chunk_batches", None),
            gather_threads=loader_options.pop("gather_threads", None),
            persistent_workers=loader_options.pop("persistent_workers", False),
        )
        if loader_options:
            raise TypeError(
                f"from_root() got unexpected keyword arguments {sorted(loader_options)}"
            )
        return self

    @property
    def columns(self) -> list[str]:
        """The keys of every batch (ragged ``offsets`` only with ``ragged="offsets"``)."""
        names = []
        for o in self.dataset.outputs:
            if o.hidden:
                continue
            names.append(o.name)
            if o.kind == "ragged" and self.ragged == "offsets":
                names.append(f"{o.name}_offsets")
        return names

    @property
    def keep_columns(self) -> list[str]:
        """The bookkeeping columns of the batches: ``keep`` columns, ``_entry``, ``_shard``."""
        return [o.name for o in self.dataset.outputs if o.kind in ("keep", "entry", "shard")]

    # -- epochs, sizes, state ---------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (its order); keeps a loaded resume point when it is that epoch."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        if epoch != self.epoch:
            self._resume = 0
            self._yielded = 0
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch for this rank (the whole epoch, also after a resume)."""
        if not isinstance(self.dataset, CacheDataset):
            raise TypeError("a streaming loader (from_root) does not know its length")
        return len(self.dataset)

    def state_dict(self) -> dict[str, Any]:
        """Where the consumer is: pass it to :meth:`load_state_dict` of a new loader."""
        ds = self.dataset
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "seed": ds.seed,
            "batches_yielded": self._yielded,
            "world_size": ds.world_size,
            "rank": ds.rank,
            "batch_size": ds.batch_size,
            "shuffle": ds.shuffle,
            "shuffle_buffer": ds.shuffle_buffer,
            "split": ds.split,
            "fractions": list(ds.fractions),
            "drop_last": ds.drop_last,
            "even_split": getattr(ds, "even_split", None),
            "split_rows": int(ds.counts.sum()) if isinstance(ds, CacheDataset) else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields the batches of ``state``'s epoch not yet yielded."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"loader state version {state.get('version')!r}, this rntensor reads "
                f"{STATE_VERSION}; it was saved by another rntensor version"
            )
        mine = self.state_dict()
        for key in _MUST_MATCH:
            if state.get(key) != mine[key]:
                raise ValueError(
                    f"cannot resume exactly: the state was saved with {key}={state.get(key)!r}, "
                    f"this loader has {key}={mine[key]!r}; build the loader with the same value"
                )
        done = int(state["batches_yielded"])
        top = len(self.dataset) if isinstance(self.dataset, CacheDataset) else None
        if done < 0 or (top is not None and done > top):
            raise ValueError(f"batches_yielded={done} is outside [0, {top}]")
        self.dataset.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self._resume = self._yielded = done

    # -- iteration --------------------------------------------------------------------
    def _torch_loader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_size=None,
            collate_fn=_as_is,  # items are ready; default_convert would walk the layouts
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            prefetch_factor=self.prefetch_factor,
            multiprocessing_context=self.multiprocessing_context,
            timeout=self.timeout_s,
            persistent_workers=self.persistent_workers,
        )

    def _in_process(self) -> Iterator[Any]:
        """``num_workers=0``: the dataset's batches straight from this process."""
        ds = self.dataset
        if isinstance(ds, CacheDataset):
            chunks = ds.iter_packed(0, 1, self.chunk_batches)
        else:
            chunks = ds.iter_packed(ds.rank, ds.world_size, self.chunk_batches)
        pin = self.pin_memory and torch.cuda.is_available()
        for p in chunks:
            if self.device.type == "cpu" and not pin:
                for arrays in p.batches:
                    yield {k: torch.from_numpy(v) for k, v in arrays.items()}
            else:  # one buffer: one pin, one device copy
                buffer = torch.from_numpy(p.buffer)
                yield (buffer.pin_memory() if pin else buffer), p.layouts

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        start, self._resume = self._resume, 0
        self.dataset.set_epoch(self.epoch)
        self.dataset.start_batch = start
        self.dataset.chunk_batches = self.chunk_batches
        self.dataset.gather_threads = self.gather_threads
        self._yielded = start
        nested = self.ragged == "nested"
        pin = self.pin_memory and torch.cuda.is_available()
        plain = self.device.type == "cpu" and not pin and not self._one_hot
        if not self.num_workers and plain and not (nested and self._ragged):
            # the common CPU case: nothing to move or convert
            for batch in self._in_process():
                self._yielded += 1
                yield batch
            return
        shutdown = None
        if self.num_workers and self.persistent_workers:
            self.dataset.share_state()  # before the workers start, then for every epoch
            if self._workers is None:
                self._workers = self._torch_loader()
            source: Iterator[Any] = iter(self._workers)  # the same workers, reset
        elif self.num_workers:
            it = iter(self._torch_loader())
            shutdown = getattr(it, "_shutdown_workers", None)
            source = it
        else:
            source = self._in_process()
        try:
            for item in DevicePrefetcher(source, self.device, depth=self.device_prefetch):
                if isinstance(item, WorkerFailure):
                    self.close()  # persistent workers too: the next epoch starts afresh
                    raise item.error
                batches = (
                    [item] if isinstance(item, dict) else [unpack(item[0], x) for x in item[1]]
                )
                for batch in batches:
                    out = finalize(batch, ragged=self._ragged, nested=nested, one_hot=self._one_hot)
                    self._yielded += 1
                    yield out
        finally:
            # Stop the workers now (end, error or the consumer's break), not whenever the
            # garbage collector gets to a reference cycle: by then multiprocessing may have
            # finalized the queues the shutdown signal travels through (a 5 s wait per worker).
            if shutdown is not None:
                shutdown()

    def close(self) -> None:
        """Stop persistent worker processes (a no-op otherwise); the loader stays usable."""
        workers, self._workers = self._workers, None
        it = getattr(workers, "_iterator", None) if workers is not None else None
        if it is not None:
            it._shutdown_workers()

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: nothing left to stop
            self.close()


def _as_is(item: Any) -> Any:
    return item
