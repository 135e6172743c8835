"""The benchmark harness shared by ``rntensor bench`` and ``benchmarks/``.

Every figure is a ratio against a baseline measured in the same run on the same data, so the
numbers mean something on any machine and nothing is hard-coded:

* **convert** (A): ``convert(DEMO_SCHEMA, files, out, n_workers=2)`` against uproot's plain
  ``arrays()`` of the fields the schema reads (the read ceiling), the awkward transform a user
  writes today, and a memory copy of the decompressed bytes (the machine limit); peak memory
  of the whole process tree (client, scheduler, nannies, workers).
* **load** (B): a warm, shuffled epoch of :class:`rntensor.torch.DataLoader` (batch 1024)
  against ROOT's ``RDataLoader`` (``load_eager=True``, second epoch), a plain
  uproot + awkward + torch loop and a memory copy of the batch bytes; peak memory above the
  start against the shuffle buffer.
* **gpu** (C): host-to-device throughput of the loader against a pinned copy of the same bytes
  (only with CUDA).

Each measurement runs in a fresh child process (``python -m rntensor.bench --child NAME
PARAMS``) that samples the memory of itself and all its descendants in a thread; repeats are
interleaved (baseline, candidate, baseline, candidate, ...) so machine noise hits all of them
alike, and every figure is the median of ``--repeat`` runs (for loaders, of every timed epoch of
every run).  Generated inputs and caches live
under ``--workdir`` (``.bench/``), keyed by their parameters, and are reused by later runs.

Imports here are light (the CLI imports this package to build its parser); numpy, uproot,
torch, dask and ROOT are imported inside the functions that need them.

Modules: ``harness`` (child processes, timing, :class:`TreeMemory`), ``data`` (generated
inputs and caches), ``convert`` (A), ``load`` (B), ``gpu`` (C), ``report`` (figures, targets,
the table) and ``command`` (options, :func:`run_bench`, child dispatch, :func:`main`).
"""

# ruff: noqa: F401
# Every name importable from the former single-module rntensor/bench.py stays importable here
# (the private helpers too: tests and benchmarks/ use some of them).
from rntensor.bench.command import _CHILDREN, _child_main, _machine, add_arguments, main, run_bench
from rntensor.bench.convert import (
    _child_awkward,
    _child_convert,
    _child_convert_stages,
    _child_convert_sync,
    _child_convert_warm,
    _child_uproot,
    _decompressed_bytes,
    _fresh,
    _start_cluster,
    _total_entries,
    _warm_read,
    _warm_worker,
    awkward_transform,
    bench_convert,
)
from rntensor.bench.data import (
    _BATCH_ROW_BYTES,
    _JET,
    _MUON,
    LOAD_SCHEMA,
    _read_fields,
    events_for_bytes,
    prepare_cache,
    prepare_inputs,
)
from rntensor.bench.gpu import _child_gpu, bench_gpu
from rntensor.bench.harness import (
    _RESULT,
    SECTIONS,
    SKIPPABLE,
    TreeMemory,
    _child_memcpy,
    _memcpy,
    _timed,
    run_child,
)
from rntensor.bench.load import (
    _child_plain_loop,
    _child_rdataloader,
    _child_rntensor_load,
    _epochs,
    _rdataframe,
    bench_load,
    plain_epoch,
)
from rntensor.bench.report import (
    _brief,
    _criterion,
    _figure,
    _first,
    _make_figure,
    _median_memory,
    _num,
    format_table,
)

__all__ = [
    "LOAD_SCHEMA",
    "SECTIONS",
    "SKIPPABLE",
    "TreeMemory",
    "add_arguments",
    "awkward_transform",
    "bench_convert",
    "bench_gpu",
    "bench_load",
    "events_for_bytes",
    "format_table",
    "main",
    "plain_epoch",
    "prepare_cache",
    "prepare_inputs",
    "run_bench",
    "run_child",
]
