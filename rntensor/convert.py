"""The conversion graph: one Dask task per (file, entry range) → Arrow shards → manifest.

This is the only module that imports dask.  The graph is built here (no dask-awkward, no
``uproot.dask``): planning happens in the submitting process (open every input, validate the
schema against its fields, split it at cluster boundaries into ranges of about one shard,
derive each shard's content address), then each missing shard becomes one task that reads its
range, transforms it and writes the shard straight to the destination (local folder or S3).
The manifest is written last by the submitting process.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rntensor import __version__
from rntensor.cache import FORMAT_VERSION, parse_bytes
from rntensor.cache.write import (
    dest_filesystem,
    load_manifest,
    load_sidecars,
    shard_key,
    write_manifest,
    write_shard,
)
from rntensor.errors import RNTensorError, SchemaError, SourceError
from rntensor.schema import ResolvedSchema, Schema, load_schema, validate
from rntensor.sources import Source, expand_inputs, open_source, plan_ranges
from rntensor.transform import FieldStats, Stats, Table, column_layout, merge_stats, transform

__all__ = ["ConvertResult", "Task", "convert", "iter_tables", "plan", "run_task"]

log = logging.getLogger("rntensor.convert")

DEFAULT_SHARD_SIZE = "128 MB"


@dataclass(frozen=True)
class Task:
    """One unit of work: entries ``[entry_start, entry_stop)`` of one source → one shard."""

    source: Source
    entry_start: int
    entry_stop: int
    key: str
    fingerprint: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source.where}, entries {self.entry_start}-{self.entry_stop}"


@dataclass
class ConvertResult:
    """What a conversion did."""

    output: str
    num_rows: int
    num_entries: int
    shards_total: int
    shards_written: int
    shards_reused: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    bytes_written: int = 0

    @property
    def events_per_s(self) -> float:
        return self.num_entries / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.shards_written == 0 and not self.failures:
            return (
                f"nothing to do: all {self.shards_total} shards of {self.output} are up to date "
                f"({self.num_rows} rows)"
            )
        s = (
            f"{self.output}: {self.shards_written} shards written, {self.shards_reused} reused, "
            f"{self.num_rows} rows from {self.num_entries} entries in {self.seconds:.1f} s"
        )
        if self.failures:
            s += f"; {len(self.failures)} failed (recorded in the manifest)"
        return s


def _estimate_event_bytes(schema: Schema) -> int:
    size = 8  # _entry
    for o in schema.outputs:
        f = len(o.fields)
        if o.kind == "padded":
            assert o.length is not None
            size += o.length * (f * 4 + 1)
        elif o.kind == "ragged":
            size += 8 * f * 4 + 8
        else:
            size += f * 4
    return size + 8 * len(schema.labels) + 4 * bool(schema.weights) + 8 * len(schema.keep)


def plan(
    schema: Schema | Mapping[str, Any] | str,
    inputs: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    skip_bad: bool = False,
) -> tuple[ResolvedSchema, list[Task], list[dict[str, Any]]]:
    """Open inputs, validate the schema against them and split them into tasks.

    Returns the resolved schema, the tasks (in input order) and failures of inputs that could
    not be opened (only with ``skip_bad``; otherwise the first such error is raised).
    """
    spec = load_schema(schema)
    specs = expand_inputs(list(inputs), storage_options=storage_options)
    sources = [open_source(s, tree=spec.tree, storage_options=storage_options) for s in specs]
    target_bytes = parse_bytes(shard_size)
    per_event = _estimate_event_bytes(spec)

    def meta(src: Source) -> tuple[Source, Any]:
        try:
            fields = src.fields
            return src, (fields, src.cluster_starts(), src.fingerprint())
        except RNTensorError as err:
            return src, err

    failures: list[dict[str, Any]] = []
    resolved: ResolvedSchema | None = None
    tasks: list[Task] = []
    with cf.ThreadPoolExecutor(max_workers=min(16, max(1, len(sources)))) as pool:
        for src, got in pool.map(meta, sources):
            if isinstance(got, RNTensorError):
                if not skip_bad:
                    raise got
                failures.append(_failure(src.url, None, None, got))
                continue
            fields, starts, fp = got
            try:
                this = validate(spec, fields)
            except SchemaError as err:
                raise err.with_context(src.where) from None
            resolved = resolved or this
            target = max(1, target_bytes // per_event)
            for a, b in plan_ranges(starts, target_entries=target):
                key = shard_key(
                    source_name=src.name,
                    tree=src.tree,
                    fingerprint=fp,
                    entry_start=a,
                    entry_stop=b,
                    schema_fingerprint=spec.fingerprint(),
                )
                tasks.append(Task(src, a, b, key, fp))
    if resolved is None:
        raise SourceError("none of the inputs could be opened; see the errors above")
    return resolved, tasks, failures


def _failure(url: str, start: int | None, stop: int | None, err: BaseException) -> dict[str, Any]:
    return {"source": url, "entry_start": start, "entry_stop": stop, "error": str(err)}


def run_task(
    task: Task,
    schema: ResolvedSchema,
    dest: str,
    storage_options: Mapping[str, Any] | None,
    compression: str | None,
) -> dict[str, Any]:
    """Read, transform and write one shard.  Runs on a worker; never raises for bad input."""
    t0 = time.perf_counter()
    source = copy.copy(task.source)  # a handle of its own, closed when done: no cached pages linger
    try:
        fs, root = dest_filesystem(dest, storage_options)
        cols = source.read(schema.input_fields, task.entry_start, task.entry_stop)
        table, stats = transform(
            schema, cols, entry_start=task.entry_start, n_entries=task.entry_stop - task.entry_start
        )
        record = {
            "source": {
                "url": _public_url(task.source.url),
                "name": source.name,
                "tree": source.tree,
                "kind": source.kind,
                "fingerprint": task.fingerprint,
            },
            "entry_start": task.entry_start,
            "entry_stop": task.entry_stop,
            "entries_read": task.entry_stop - task.entry_start,
            "stats": {o: {f: s.to_dict() for f, s in fs_.items()} for o, fs_ in stats.items()},
        }
        rec = write_shard(
            fs, root, task.key, table, column_layout(schema), record=record, compression=compression
        )
        del cols, table
        rec["seconds"] = time.perf_counter() - t0
        return {"ok": True, "record": rec}
    except RNTensorError as err:
        e = err if err.context else err.with_context(task.where)
        return {
            "ok": False,
            "failure": _failure(task.source.url, task.entry_start, task.entry_stop, e),
        }
    except MemoryError:
        raise
    except Exception as err:  # a bug or an unexpected reader failure: report it with its place
        msg = f"{type(err).__name__}: {' '.join(str(err).split())[:300]} ({task.where})"
        return {
            "ok": False,
            "failure": {
                **_failure(task.source.url, task.entry_start, task.entry_stop, err),
                "error": msg,
            },
        }
    finally:
        source.close()


def _public_url(url: str) -> str:
    """A URL without any user:password part."""
    if "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        proto, rest = url.split("://", 1)
        return f"{proto}://{rest.split('@', 1)[1]}"
    return url


def convert(
    schema: Schema | Mapping[str, Any] | str,
    inputs: Sequence[str],
    output: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    output_storage_options: Mapping[str, Any] | None = None,
    shard_size: int | str = DEFAULT_SHARD_SIZE,
    scheduler: str | Any | None = None,
    compression: str | None = None,
    skip_bad: bool = False,
    progress: bool | None = None,
    n_workers: int | None = None,
) -> ConvertResult:
    """Convert ROOT inputs into a shard cache at ``output`` (a folder or an s3:// prefix).

    Args:
        schema: a :class:`Schema`, a dict, or a YAML file path.
        inputs: paths, globs, folders or s3:// URLs, optionally with ``:TREE``.
        output: destination folder or s3:// prefix.
        storage_options: fsspec options for the inputs (``endpoint_url``, ``key``, ...).
        output_storage_options: fsspec options for the output; defaults to ``storage_options``.
        shard_size: target uncompressed shard size (``"128 MB"``).
        scheduler: ``None`` or ``"local"`` (a local distributed cluster sized to the machine:
            in-process workers of one thread, one per core), ``"local-processes"`` (a worker
            process per core),
            ``"threads"``, ``"processes"``, ``"synchronous"``, ``"tcp://host:port"``,
            ``"jobqueue:htcondor"``/``"jobqueue:slurm"``, or a ``distributed.Client``.
        compression: ``None`` (memory-mappable), ``"lz4"`` or ``"zstd"``.
        skip_bad: convert what can be converted and record failures in the manifest.
        progress: progress bar (terminal) or log lines; ``None`` decides by ``isatty``.
        n_workers: workers of the default local cluster.
    """
    if compression not in (None, "none", "lz4", "zstd"):
        raise ValueError(f"compression must be None, 'lz4' or 'zstd', got {compression!r}")
    compression = None if compression == "none" else compression
    out_opts = dict(
        output_storage_options if output_storage_options is not None else storage_options or {}
    )
    t0 = time.perf_counter()
    resolved, tasks, failures = plan(
        schema, inputs, storage_options=storage_options, shard_size=shard_size, skip_bad=skip_bad
    )
    fs, root = dest_filesystem(output, out_opts)
    done = _finished_shards(fs, root, {t.key for t in tasks}, resolved)
    todo = [t for t in tasks if t.key not in done]
    records: dict[str, dict[str, Any]] = dict(done)
    written = 0
    reporter = _Progress(len(todo), sum(t.entry_stop - t.entry_start for t in todo), progress)
    if todo:
        for result, task in _execute(
            todo, resolved, output, out_opts, compression, scheduler, n_workers
        ):
            if result["ok"]:
                records[task.key] = result["record"]
                written += 1
                reporter.update(task, result["record"].get("bytes", 0))
            else:
                failures.append(result["failure"])
                reporter.fail(result["failure"]["error"])
    reporter.close()
    if failures and not skip_bad:
        first = failures[0]["error"]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise SourceError(
            f"{first}{more}; finished shards are kept and reused on the next run; "
            "fix the input or pass --skip-bad to convert the rest"
        )
    ordered = [records[t.key] for t in tasks if t.key in records]
    manifest = _manifest(resolved, ordered, failures)
    write_manifest(fs, root, manifest)
    _remove_stale_temporaries(fs, root)
    return ConvertResult(
        output=output,
        num_rows=manifest["num_rows"],
        num_entries=sum(r["entries_read"] for r in ordered),
        shards_total=len(tasks),
        shards_written=written,
        shards_reused=len(ordered) - written,
        failures=failures,
        seconds=time.perf_counter() - t0,
        bytes_written=sum(r["bytes"] for r in ordered),
    )


def _remove_stale_temporaries(fs: Any, root: str) -> None:
    """Delete temporary files an interrupted run left behind (local destinations only)."""
    folder = os.path.join(root, "shards")
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(".") and ".tmp-" in name:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _finished_shards(
    fs: Any, root: str, keys: set[str], schema: ResolvedSchema
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    old = load_manifest(fs, root)
    if old and old.get("format_version") == FORMAT_VERSION:
        for rec in old.get("shards", []):
            if rec.get("key") in keys:
                found[rec["key"]] = rec
        if found:
            try:
                present = {os.path.basename(p) for p in fs.ls(f"{root}/shards", detail=False)}
            except FileNotFoundError:
                present = set()
            found = {k: r for k, r in found.items() if f"{k}.arrow" in present}
    missing = keys - set(found)
    if missing:
        found.update(load_sidecars(fs, root, missing))
    return found


def _manifest(
    schema: ResolvedSchema, records: list[dict[str, Any]], failures: list[dict[str, Any]]
) -> dict[str, Any]:
    stats: Stats = {}
    for r in records:
        part = {
            o: {f: FieldStats.from_dict(d) for f, d in fs_.items()}
            for o, fs_ in r.get("stats", {}).items()
        }
        stats = merge_stats(stats, part)
    shards = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    return {
        "format_version": FORMAT_VERSION,
        "created_by": f"rntensor {__version__}",
        "schema": schema.schema.to_dict(),
        "schema_fingerprint": schema.schema.fingerprint(),
        "columns": column_layout(schema),
        "shards": shards,
        "failures": failures,
        "stats": {o: {f: s.to_dict() for f, s in fs_.items()} for o, fs_ in stats.items()},
        "num_rows": sum(r["rows"] for r in records),
    }


# -- scheduling ---------------------------------------------------------------------------


def _execute(
    tasks: list[Task],
    schema: ResolvedSchema,
    dest: str,
    opts: Mapping[str, Any],
    compression: str | None,
    scheduler: Any,
    n_workers: int | None,
) -> Iterator[tuple[dict[str, Any], Task]]:
    """Run the tasks on the chosen scheduler, yielding results as they finish."""
    import dask

    if scheduler in ("threads", "processes", "synchronous", "sync", "single-threaded"):
        graph = {
            ("shard", i): (run_task, t, schema, dest, dict(opts), compression)
            for i, t in enumerate(tasks)
        }
        if scheduler == "synchronous":
            for i, t in enumerate(tasks):
                yield dask.get(graph, ("shard", i)), t
            return
        keys = [("shard", i) for i in range(len(tasks))]
        get = dask.threaded.get if scheduler == "threads" else dask.multiprocessing.get
        results = get(graph, keys, num_workers=n_workers) if n_workers else get(graph, keys)
        yield from zip(results, tasks, strict=True)
        return
    with _client(scheduler, n_workers) as client:
        from distributed import as_completed

        futures = {}
        for i, t in enumerate(tasks):
            fut = client.submit(
                run_task,
                t,
                schema,
                dest,
                dict(opts),
                compression,
                key=f"rntensor-shard-{t.key}-{i}",
                retries=1,
                pure=False,
                priority=t.entry_stop
                - t.entry_start,  # largest first: better balance across workers
            )
            futures[fut] = t
        for fut in as_completed(list(futures)):
            t = futures.pop(fut)  # release each result as soon as it is in
            try:
                result = fut.result()
                fut.release()
                yield result, t
            except Exception as err:  # worker died (KilledWorker) or the task could not run
                yield (
                    {
                        "ok": False,
                        "failure": _failure(
                            t.source.url,
                            t.entry_start,
                            t.entry_stop,
                            RuntimeError(
                                f"{type(err).__name__}: {err} ({t.where}); re-run to retry"
                            ),
                        ),
                    },
                    t,
                )


# The nanny sets MALLOC_TRIM_THRESHOLD_=65536 in workers, which turns off glibc's adaptive mmap
# threshold: every large array is then freshly mapped and page-faulted in, which halves the
# speed of the numpy-heavy tasks here.  Large thresholds keep freed arenas for reuse.
_WORKER_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


# Settings of the clusters ``convert`` starts itself.  In-process workers share the GIL with
# the scheduler's event loop, so its housekeeping is paid out of conversion time:
# - the workers' statistical profiler samples every thread's stack every 10 ms, holding the
#   GIL (~20% of a local conversion's time);
# - the event-loop tick (20 ms), system monitor (0.5 s) and memory monitor (0.1 s) wake the
#   loop for diagnostics and dashboards nobody looks at here: ~8% of the CPU time;
# - one task per worker thread at a time, the rest queued on the scheduler largest first,
#   and no work stealing: a worker that finishes takes the next largest task, which balances
#   a few tasks of unequal size (one per file) better than assigning them all up front.
_LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.scheduler.work-stealing": False,
}


class _client:
    """Context manager giving a ``distributed.Client`` for a scheduler spec."""

    def __init__(self, scheduler: Any, n_workers: int | None) -> None:
        self.scheduler = scheduler
        self.n_workers = n_workers
        self._close: list[Any] = []

    def __enter__(self) -> Any:
        from distributed import Client

        s = self.scheduler
        cluster: Any
        if not log.isEnabledFor(logging.DEBUG):  # distributed's INFO chatter is not for users
            for name in (
                "distributed",
                "distributed.scheduler",
                "distributed.nanny",
                "distributed.core",
                "distributed.worker",
            ):
                logging.getLogger(name).setLevel(logging.ERROR)

        if s is not None and not isinstance(s, str):
            return s  # a Client given by the caller
        if s is None or s in ("local", "local-processes"):
            import dask
            from distributed import LocalCluster

            cfg = dask.config.set(_LOCAL_CLUSTER_CONFIG)
            cfg.__enter__()
            self._close.append(_ConfigExit(cfg))

            n = self.n_workers or max(1, min(os.cpu_count() or 1, 16))
            # "local" (the default): in-process workers, one thread each, one per core.  The tasks
            # spend their time in uproot's decompression and numpy, which release the GIL, so
            # threads use every core without a second's worth of process start-up (which is
            # longer than converting a million events).  "local-processes": a worker process
            # per core, for isolation.  No dashboards: dashboard_address=None alone still
            # serves HTTP routes on :8787.
            processes = s == "local-processes"
            cluster = LocalCluster(
                n_workers=n,  # in-process workers of one thread each beat one worker of n threads
                threads_per_worker=1,
                processes=processes,
                dashboard_address=None,
                worker_dashboard_address=None,
                silence_logs=logging.ERROR,
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                # processes listen on loopback only; threads talk in-process (no sockets)
                **({"env": _WORKER_ENV, "host": "127.0.0.1"} if processes else {}),
            )
            self._close.append(cluster)
        elif s.startswith("tcp://") or s.startswith("tls://"):
            cluster = s
        elif s.startswith("jobqueue:"):
            cluster = _jobqueue_cluster(s.split(":", 1)[1], self.n_workers)
            self._close.append(cluster)
        else:
            raise ValueError(
                f"unknown scheduler {s!r}; use local, local-processes, threads, processes, synchronous, tcp://HOST:PORT, "
                "jobqueue:htcondor or jobqueue:slurm"
            )
        client = Client(cluster)
        self._close.insert(0, client)
        return client

    def __exit__(self, *exc: Any) -> None:
        # the client first, then what was opened, newest first (cluster, then config)
        for c in self._close[:1] + self._close[:0:-1]:
            with contextlib.suppress(Exception):  # closing is best effort
                c.close()


class _ConfigExit:
    """Closes a ``dask.config.set`` context like a cluster is closed."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def close(self) -> None:
        self.cfg.__exit__(None, None, None)


def _jobqueue_cluster(kind: str, n_workers: int | None) -> Any:
    try:
        import dask_jobqueue
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "scheduler 'jobqueue:...' needs dask-jobqueue: pip install 'rntensor[jobqueue]'"
        ) from err
    classes = {
        "htcondor": "HTCondorCluster",
        "slurm": "SLURMCluster",
        "pbs": "PBSCluster",
        "sge": "SGECluster",
        "lsf": "LSFCluster",
    }
    if kind not in classes:
        raise ValueError(f"unknown jobqueue system {kind!r}; use one of {sorted(classes)}")
    cluster = getattr(
        dask_jobqueue, classes[kind]
    )()  # cores, memory, ... from dask config (jobqueue.yaml)
    cluster.scale(n_workers or 4)
    return cluster


class _Progress:
    """A tqdm bar on a terminal, plain log lines otherwise, nothing with ``quiet``."""

    def __init__(self, shards: int, events: int, enabled: bool | None) -> None:
        self.enabled = enabled if enabled is not None else True
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.done = 0
        self.events = 0
        self.bytes = 0
        self.total = shards
        self.bar = None
        if self.enabled and self.tty and shards:
            from tqdm import tqdm

            self.bar = tqdm(
                total=events,
                unit="ev",
                unit_scale=True,
                desc=f"0/{shards} shards",
                dynamic_ncols=True,
            )

    def update(self, task: Task, nbytes: int) -> None:
        self.done += 1
        n = task.entry_stop - task.entry_start
        self.events += n
        self.bytes += nbytes
        dt = max(time.perf_counter() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.set_description(f"{self.done}/{self.total} shards")
            self.bar.set_postfix_str(f"{self.bytes / dt / 1e6:.0f} MB/s", refresh=False)
            self.bar.update(n)
        elif self.enabled:
            print(
                f"rntensor: shard {self.done}/{self.total} done ({task.source.name} {task.entry_start}-{task.entry_stop}), "
                f"{self.events / dt:,.0f} events/s, {self.bytes / dt / 1e6:.0f} MB/s",
                file=sys.stderr,
            )

    def fail(self, message: str) -> None:
        if self.enabled:
            (self.bar.write if self.bar is not None else lambda m: print(m, file=sys.stderr))(
                f"rntensor: failed: {message}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- streaming (no cache) -----------------------------------------------------------------


def iter_tables(
    schema: Schema | Mapping[str, Any] | str,
    inputs: Sequence[str],
    *,
    storage_options: Mapping[str, Any] | None = None,
    step_size: int | str = "64 MB",
    read_ahead: int = 2,
    tasks: Sequence[Task] | None = None,
    resolved: ResolvedSchema | None = None,
) -> Iterator[tuple[Table, Task]]:
    """Read ROOT inputs directly and yield transformed tables in input order.

    A small thread pool reads ``read_ahead`` ranges ahead while the caller consumes the
    current one (uproot releases the GIL while decompressing).  Given ``tasks`` and
    ``resolved`` (from :func:`plan`), the inputs are not opened and validated again.
    """
    if tasks is not None and resolved is not None:
        todo = list(tasks)
    else:
        resolved, planned, _ = plan(
            schema, inputs, storage_options=storage_options, shard_size=step_size
        )
        todo = list(tasks) if tasks is not None else planned

    def work(t: Task) -> Table:
        cols = t.source.read(resolved.input_fields, t.entry_start, t.entry_stop)
        table, _ = transform(
            resolved,
            cols,
            entry_start=t.entry_start,
            n_entries=t.entry_stop - t.entry_start,
            with_stats=False,
        )
        return table

    with cf.ThreadPoolExecutor(max_workers=max(1, read_ahead)) as pool:
        pending: list[tuple[cf.Future[Table], Task]] = []
        it = iter(todo)
        for t in it:
            pending.append((pool.submit(work, t), t))
            if len(pending) > read_ahead:
                break
        while pending:
            fut, t = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((pool.submit(work, nxt), nxt))
            try:
                yield fut.result(), t
            except RNTensorError as err:
                raise (err if err.context else err.with_context(t.where)) from None
