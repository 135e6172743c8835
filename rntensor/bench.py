"""The benchmark harness shared by ``rntensor bench`` and benchmarks/ (being written)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000)


def run_bench(args: Any) -> None:
    raise NotImplementedError("rntensor bench is not written yet")
