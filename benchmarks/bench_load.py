"""Loading benchmark (sections B and C of ``rntensor bench``).

A warm, shuffled epoch (batch 1024) of ``rntensor.torch.DataLoader`` over the converted cache
(jets 10 x 5 sorted by -pt, muons 4 x 2 padded, MET_pt, MET_phi, target) against, in the same
run: ROOT's ``RDataLoader`` (``load_eager=True``, second epoch) on the same RNTuple files and
shapes, a plain uproot + awkward + torch loop, and a memory copy of the batch bytes; plus the
peak memory above the start against the shuffle buffer.  The GPU section runs only with CUDA.

    python benchmarks/bench_load.py --events 1000000 --repeat 3 --json load.json
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from rntensor.bench import add_arguments, run_bench

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``rntensor bench`` options and run the loading (and GPU) sections only."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.only = args.only or ["load", "gpu"]
    return run_bench(args)


if __name__ == "__main__":  # DataLoader workers and child processes: keep this guard
    main(sys.argv[1:])
