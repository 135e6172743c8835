"""Conversion benchmark (section A of ``rntensor bench``).

``rntensor convert`` of the jet-tagging demo schema (2 Dask worker processes) against, in the
same run: uproot's plain ``arrays()`` of the same fields (the read ceiling), the awkward
transform a user writes today, and a memory copy of the decompressed bytes (the machine limit);
plus the peak memory of the whole process tree.  See README.md in this folder.

    python benchmarks/bench_convert.py --events 1000000 --repeat 3 --json convert.json
    python benchmarks/bench_convert.py --input-gb 5 --input-compression none --files 16 --repeat 1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rntensor.bench import add_arguments, run_bench

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``rntensor bench`` options and run the conversion section only."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.only = ["convert"]
    return run_bench(args)


if __name__ == "__main__":  # LocalCluster spawns worker processes: keep this guard
    main(sys.argv[1:])
