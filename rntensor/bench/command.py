"""``rntensor bench`` and ``python -m rntensor.bench``: options, the run, child dispatch."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rntensor.bench.convert import (
    _child_awkward,
    _child_convert,
    _child_convert_stages,
    _child_convert_sync,
    _child_convert_warm,
    _child_uproot,
    bench_convert,
)
from rntensor.bench.data import events_for_bytes, prepare_inputs
from rntensor.bench.gpu import _child_gpu, bench_gpu
from rntensor.bench.harness import SECTIONS, SKIPPABLE, _child_memcpy, child_main
from rntensor.bench.load import (
    _child_plain_loop,
    _child_rdataloader,
    _child_rntensor_load,
    bench_load,
)
from rntensor.bench.report import format_table

__all__ = ["add_arguments", "main", "run_bench"]


# -- entry points ---------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rntensor bench`` (and of ``python -m rntensor.bench``)."""
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="generated events (default 1000000)"
    )
    parser.add_argument("--files", type=int, default=4, help="input files (default 4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per measurement; figures are medians (default 3)",
    )
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only this section (repeatable; default: all)",
    )
    parser.add_argument(
        "--workdir", default=".bench", help="generated data, caches and scratch (default ./.bench)"
    )
    parser.add_argument(
        "--json", metavar="OUT", default=None, help="also write every figure to this JSON file"
    )
    parser.add_argument(
        "--input-compression",
        choices=["zstd", "none"],
        default="zstd",
        help="compression of the generated RNTuple files (default zstd)",
    )
    parser.add_argument(
        "--input-gb",
        type=float,
        default=None,
        help="size the input to this many GB on disk instead of --events (e.g. 5)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="Dask workers for the conversion (default 2)"
    )
    parser.add_argument(
        "--shard-size", default="128 MB", help="conversion shard size (default 128 MB)"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        action="append",
        default=None,
        help="DataLoader workers to measure (repeatable; default 0 and 2)",
    )
    parser.add_argument(
        "--shuffle-buffer", type=int, default=65536, help="loader shuffle buffer, events"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="KEY",
        help="leave out a measurement (repeatable): uproot, awkward, memcpy, convert, "
        "convert_warm, convert_sync, stages, rdataloader, plain",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="timed epochs per loader run, after a warm-up (default 3)",
    )


def _machine() -> dict[str, Any]:
    import psutil

    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "memory_gb": psutil.virtual_memory().total / 1e9,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the chosen sections, print the table, optionally write ``--json``; return the results."""
    for name in ("events", "files", "repeat", "workers", "epochs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    unknown = sorted(set(args.skip or ()) - set(SKIPPABLE))
    if unknown:
        raise ValueError(
            f"--skip {unknown[0]!r} is not a measurement; use one of {', '.join(SKIPPABLE)}"
        )
    sections = args.only or list(SECTIONS)
    workdir = os.path.abspath(args.workdir)
    compression = None if args.input_compression == "none" else args.input_compression
    n_events = args.events
    if args.input_gb:
        n_events = events_for_bytes(
            int(args.input_gb * 1e9), compression=compression, workdir=workdir
        )
        print(
            f"{args.input_gb:g} GB of {args.input_compression} RNTuple is about {n_events:,} events",
            flush=True,
        )
    files = prepare_inputs(workdir, n_events=n_events, n_files=args.files, compression=compression)
    results: dict[str, Any] = {
        "machine": _machine(),
        "repeat": args.repeat,
        "workdir": workdir,
        "inputs": {
            "files": files,
            "bytes": sum(os.path.getsize(f) for f in files),
            "compression": args.input_compression,
        },
    }
    num_workers = args.num_workers or [0, 2]

    def log(msg: str) -> None:
        print(msg, flush=True)

    if "convert" in sections:
        log("[convert] measuring ...")
        results["convert"] = bench_convert(
            files,
            workdir,
            repeat=args.repeat,
            workers=args.workers,
            shard_size=args.shard_size,
            skip=args.skip,
            log=log,
        )
    if "load" in sections:
        log("[load] measuring ...")
        results["load"] = bench_load(
            files,
            workdir,
            repeat=args.repeat,
            epochs=args.epochs,
            num_workers=num_workers,
            shuffle_buffer=args.shuffle_buffer,
            skip=args.skip,
            log=log,
        )
    if "gpu" in sections:
        log("[gpu] measuring ...")
        results["gpu"] = bench_gpu(
            files,
            workdir,
            repeat=args.repeat,
            epochs=args.epochs,
            num_workers=max(num_workers),
            log=log,
        )
    results["machine"]["load_avg_end"] = os.getloadavg()[0]
    print()
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {args.json}")
    return results


_CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "uproot": _child_uproot,
    "awkward": _child_awkward,
    "memcpy": _child_memcpy,
    "convert": _child_convert,
    "convert_warm": _child_convert_warm,
    "convert_sync": _child_convert_sync,
    "convert_stages": _child_convert_stages,
    "rntensor_load": _child_rntensor_load,
    "rdataloader": _child_rdataloader,
    "plain_loop": _child_plain_loop,
    "gpu": _child_gpu,
}


def _child_main(name: str, params_json: str) -> None:
    child_main(_CHILDREN, name, params_json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rntensor.bench [options]`` (same options as ``rntensor bench``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        _child_main(argv[1], argv[2])
        return 0
    from rntensor import bench

    parser = argparse.ArgumentParser(
        prog="python -m rntensor.bench", description=(bench.__doc__ or "").split("\n")[0]
    )
    add_arguments(parser)
    run_bench(parser.parse_args(argv))
    return 0
