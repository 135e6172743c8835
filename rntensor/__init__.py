"""rntensor: ROOT (TTree and RNTuple) event data → ML tensors.

Reads once, in parallel, from wherever the data lives (POSIX or S3), keeps a memory-mappable
Arrow cache, and keeps a GPU fed.  The public API is re-exported here lazily: importing
``rntensor`` imports neither torch nor dask (nor uproot or pyarrow) until a name is used.
The DataLoader lives in :mod:`rntensor.torch` (``from rntensor.torch import DataLoader``).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CacheError": "rntensor.errors",
    "ConvertResult": "rntensor.convert",
    "RNTensorError": "rntensor.errors",
    "Schema": "rntensor.schema",
    "SchemaError": "rntensor.errors",
    "SourceError": "rntensor.errors",
    "StorageError": "rntensor.errors",
    "convert": "rntensor.convert",
    "infer": "rntensor.infer",
    "inspect_path": "rntensor.inspect",
    "iter_tables": "rntensor.convert",
    "load_schema": "rntensor.schema",
    "open_cache": "rntensor.cache.read",
    "open_source": "rntensor.sources",
    "validate": "rntensor.schema",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rntensor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
