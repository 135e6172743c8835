"""The ``rntensor`` command line: each verb calls one public function.

Errors a user can cause print one line (``rntensor: error: ...``) and exit non-zero without a
traceback; ``--debug`` shows it.  Exit codes: 1 generic, 2 schema or usage, 3 input, 4 storage,
5 cache, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from rntensor import __version__
from rntensor.errors import RNTensorError

__all__ = ["main"]


def _storage_options(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SystemExit(
            _usage(
                f'--storage-options is not valid JSON ({err.msg}); pass e.g. \'{{"endpoint_url": "http://127.0.0.1:8333"}}\''
            )
        ) from None
    if not isinstance(value, dict):
        raise SystemExit(_usage("--storage-options must be a JSON object"))
    return value


def _usage(msg: str) -> int:
    print(f"rntensor: error: {msg}", file=sys.stderr)
    return 2


# -- verbs --------------------------------------------------------------------------------


def _cmd_convert(args: argparse.Namespace) -> int:
    from rntensor.convert import convert

    opts = _storage_options(args.storage_options)
    result = convert(
        args.schema,
        args.inputs,
        args.output,
        storage_options=opts,
        output_storage_options=_storage_options(args.output_storage_options)
        if args.output_storage_options
        else opts,
        shard_size=args.shard_size,
        scheduler=args.scheduler,
        compression=args.compression,
        skip_bad=args.skip_bad,
        progress=False if args.quiet else None,
        n_workers=args.workers,
    )
    if not args.quiet:
        print(result.summary())
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rntensor.inspect import inspect_path

    print(
        inspect_path(
            args.path, storage_options=_storage_options(args.storage_options), as_json=args.json
        )
    )
    return 0


def _cmd_schema_init(args: argparse.Namespace) -> int:
    from rntensor.schema.init import starter_yaml
    from rntensor.sources import open_source

    text = starter_yaml(
        open_source(args.file, storage_options=_storage_options(args.storage_options))
    )
    if args.output and args.output != "-":
        if os.path.exists(args.output) and not args.force:
            return _usage(f"{args.output} exists; pass --force to overwrite it")
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from rntensor.datagen import generate_dataset

    paths = generate_dataset(
        args.output,
        n_events=args.events,
        n_files=args.files,
        fmt=args.format,
        compression=None if args.compression == "none" else args.compression,
        seed=args.seed,
    )
    print(f"wrote {len(paths)} files with {args.events} events to {args.output}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from rntensor.demo import run_demo

    run_demo(args.workdir, n_events=args.events, workers=args.workers)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from rntensor.bench import run_bench

    run_bench(args)
    return 0


def _cmd_infer(args: argparse.Namespace) -> int:
    from rntensor.infer import infer

    result = infer(
        args.model,
        args.data,
        args.output,
        schema=args.schema,
        batch_size=args.batch_size,
        device=args.device,
        storage_options=_storage_options(args.storage_options),
        stats_from=args.stats_from,
    )
    print(result.summary())
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rntensor", description="ROOT (TTree/RNTuple) → ML tensors.")
    p.add_argument("--version", action="version", version=f"rntensor {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    c = sub.add_parser("convert", help="convert ROOT files into an Arrow shard cache with Dask")
    c.add_argument("schema", help="schema YAML file")
    c.add_argument(
        "inputs", nargs="+", help="files, globs, folders or s3:// URLs (FILE.root:TREE works)"
    )
    c.add_argument("--output", "-o", required=True, help="destination folder or s3:// prefix")
    c.add_argument("--storage-options", help="JSON fsspec options (endpoint_url, key, secret, ...)")
    c.add_argument(
        "--output-storage-options", help="JSON fsspec options for the output if different"
    )
    c.add_argument(
        "--shard-size", default="128 MB", help="target uncompressed shard size (default 128 MB)"
    )
    c.add_argument(
        "--scheduler",
        default=None,
        help="local (default: a local distributed cluster, an in-process worker per core)|local-processes|threads|processes|synchronous|tcp://HOST:PORT|jobqueue:htcondor|jobqueue:slurm",
    )
    c.add_argument("--workers", type=int, default=None, help="workers of the default local cluster")
    c.add_argument(
        "--compression",
        choices=["none", "lz4", "zstd"],
        default="none",
        help="shard compression (none = memory-mappable)",
    )
    c.add_argument(
        "--skip-bad",
        action="store_true",
        help="convert what can be converted; record failures in the manifest",
    )
    c.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    c.set_defaults(func=_cmd_convert)

    i = sub.add_parser(
        "inspect", help="show a ROOT file's trees and fields, or a dataset's manifest"
    )
    i.add_argument("path", help="ROOT file (FILE.root[:TREE]) or dataset folder / s3:// prefix")
    i.add_argument("--storage-options", help="JSON fsspec options")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("schema", help="schema tools")
    ssub = s.add_subparsers(dest="schema_verb", metavar="VERB")
    si = ssub.add_parser("init", help="write a starter schema from a ROOT file")
    si.add_argument("file", help="FILE.root[:TREE]")
    si.add_argument("--output", "-o", default="-", help="where to write the YAML (default: stdout)")
    si.add_argument("--force", action="store_true", help="overwrite an existing file")
    si.add_argument("--storage-options", help="JSON fsspec options")
    si.set_defaults(func=_cmd_schema_init)

    g = sub.add_parser(
        "generate", help="write a NanoAOD-like synthetic dataset (for tests and benchmarks)"
    )
    g.add_argument("output", help="destination folder")
    g.add_argument("--events", type=int, default=1_000_000)
    g.add_argument("--files", type=int, default=4)
    g.add_argument("--format", choices=["rntuple", "ttree"], default="rntuple")
    g.add_argument("--compression", choices=["zstd", "lz4", "zlib", "lzma", "none"], default="zstd")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_cmd_generate)

    d = sub.add_parser("demo", help="run the whole pipeline on generated data (local, CPU)")
    d.add_argument(
        "--workdir", default="rntensor-demo", help="working folder (default ./rntensor-demo)"
    )
    d.add_argument("--events", type=int, default=200_000)
    d.add_argument("--workers", type=int, default=2)
    d.set_defaults(func=_cmd_demo)

    b = sub.add_parser(
        "bench", help="measure conversion and loading against baselines on this machine"
    )
    from rntensor.bench import add_arguments

    add_arguments(b)
    b.set_defaults(func=_cmd_bench)

    n = sub.add_parser(
        "infer", help="run a TorchScript/PyTorch model over a dataset and write a friend file"
    )
    n.add_argument("model", help="model file (torch.jit.save or torch.save of a module)")
    n.add_argument("data", help="dataset folder (converted cache) or ROOT files with --schema")
    n.add_argument("--output", "-o", required=True, help="friend file to write (.root or .arrow)")
    n.add_argument("--schema", default=None, help="schema, when reading ROOT files directly")
    n.add_argument(
        "--stats-from",
        default=None,
        help="training cache whose normalization statistics to apply (with --schema)",
    )
    n.add_argument("--batch-size", type=int, default=4096)
    n.add_argument("--device", default="cpu")
    n.add_argument("--storage-options", help="JSON fsspec options")
    n.set_defaults(func=_cmd_infer)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RNTensorError as err:
        if args.debug:
            raise
        print(f"rntensor: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(
            "rntensor: interrupted; finished shards are kept and reused on the next run",
            file=sys.stderr,
        )
        return 130
    except (ValueError, ModuleNotFoundError, OSError) as err:
        if args.debug:
            raise
        print(f"rntensor: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1


if __name__ == "__main__":
    sys.exit(main())
