"""The shard cache: Arrow IPC shards plus a JSON manifest (see FORMAT.md in this folder)."""

from __future__ import annotations

import re

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARDS_DIR = "shards"

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "SHARDS_DIR", "parse_bytes"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(value: int | float | str) -> int:
    """``"256 MB"`` → 256000000; ``"2 GiB"`` → 2147483648; numbers pass through."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a byte size must be positive, got {value!r}")
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m[2].lower() not in _UNITS:
        raise ValueError(f"cannot read {value!r} as a byte size; write it like '256 MB' or '2 GiB'")
    n = int(float(m[1]) * _UNITS[m[2].lower()])
    if n <= 0:
        raise ValueError(f"a byte size must be positive, got {value!r}")
    return n
