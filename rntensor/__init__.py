"""rntensor: ROOT (TTree and RNTuple) event data → ML tensors.

Reads once, in parallel, from wherever the data lives (POSIX or S3), keeps a memory-mappable
Arrow cache, and keeps a GPU fed.  Importing this package imports neither torch nor dask.
"""

from __future__ import annotations

__version__ = "0.1.0"
