"""The exception hierarchy of rntensor.

::

    RNTensorError
    ├── SchemaError        (also ValueError)  bad schema or expression
    ├── SourceError        (also OSError)     missing, unreadable or corrupt input
    │   └── StorageError                      S3 / network failure while reading or writing
    └── CacheError                            stale, partial or mismatched cache

Every message says what is wrong, the value received, what was expected and what to
do, followed by context (file, entry range, shard).  The CLI prints ``str(err)`` on one
line and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CacheError",
    "RNTensorError",
    "SchemaError",
    "SourceError",
    "StorageError",
    "closest",
    "did_you_mean",
]


class RNTensorError(Exception):
    """Base class of every error rntensor raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, context: str | None = None) -> None:
        self.message = " ".join(str(message).split())
        self.context = context
        super().__init__(self.message if not context else f"{self.message} ({context})")

    def with_context(self, context: str) -> RNTensorError:
        """A copy of this error with ``context`` (file, entry range, shard) attached."""
        joined = context if not self.context else f"{self.context}; {context}"
        err = type(self).__new__(type(self))
        RNTensorError.__init__(err, self.message, context=joined)
        return err

    def __reduce__(self):  # errors cross process boundaries (Dask, DataLoader workers)
        return (_rebuild, (type(self), self.message, self.context))


def _rebuild(cls: type[RNTensorError], message: str, context: str | None) -> RNTensorError:
    err = cls.__new__(cls)
    RNTensorError.__init__(err, message, context=context)
    return err


class SchemaError(RNTensorError, ValueError):
    """A schema or expression is invalid (unknown field, bad syntax, wrong shape)."""

    exit_code = 2


class SourceError(RNTensorError, OSError):
    """An input is missing, unreadable, not ROOT, truncated or corrupt."""

    exit_code = 3


class StorageError(SourceError):
    """The storage layer (S3, network) failed; usually worth retrying."""

    exit_code = 4


class CacheError(RNTensorError):
    """A cache is stale, partial, of another format version or of another schema."""

    exit_code = 5


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (case-insensitive), best first."""
    cands = list(candidates)
    lower = {c.lower(): c for c in cands}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)
    return [lower[h] for h in hits]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``" did you mean 'x'?"`` or an empty string."""
    hits = closest(name, candidates)
    if not hits:
        return ""
    return " did you mean " + " or ".join(repr(h) for h in hits) + "?"
