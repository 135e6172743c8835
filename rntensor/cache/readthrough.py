"""A local read-through cache of remote shards: size-limited folder, LRU eviction.

Remote shards (``s3://…``) are downloaded whole into ``folder/<key>.arrow`` before they are
memory-mapped, so the loader reads object-store data exactly like local data.  A shard key names
its content (see FORMAT.md), so a file present under its key never needs re-validation beyond
its size.

* Downloads go to ``.<key>.arrow.tmp-<pid>-<thread>`` and are renamed when complete and
  checked (size and ``xxh64`` checksum, computed while streaming): a reader never maps a partial
  file.
* Several processes (DataLoader workers, DDP ranks on one host) may share a folder: a per-key
  ``flock`` makes one of them download while the others wait and then reuse the file.
* After each download, the least recently used shards (file modification time, bumped on every
  use) are deleted until the folder fits in ``capacity_bytes``; the shard just fetched is kept
  even when it alone is larger.  Deleting a file another process has memory-mapped is safe on
  POSIX: its pages stay valid until unmapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import xxhash

from rntensor.errors import CacheError, StorageError

__all__ = ["ReadThroughCache", "RemoteStore", "file_checksum"]

_CHUNK = 8 << 20

try:  # POSIX advisory locks; elsewhere processes may download the same shard twice
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def file_checksum(path: str) -> str:
    """``"xxh64:<hex>"`` of a file's bytes, read in chunks."""
    h = xxhash.xxh64()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "xxh64:" + h.hexdigest()


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class ReadThroughCache:
    """A folder of downloaded shards with a size limit.

    Args:
        folder: local folder (created on first use).
        capacity_bytes: total size of ``*.arrow`` files kept; least recently used go first.
    """

    def __init__(self, folder: str, capacity_bytes: int) -> None:
        self.folder = folder
        self.capacity_bytes = capacity_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pid = os.getpid()
        self._clock = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "capacity_bytes": self.capacity_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"], state["capacity_bytes"])  # type: ignore[misc]

    def path_of(self, key: str) -> str:
        return os.path.join(self.folder, f"{key}.arrow")

    def fetch(self, key: str, url: str, fs: Any, *, size: int | None, checksum: str | None) -> str:
        """The local path of shard ``key``, downloading ``url`` through ``fs`` if absent."""
        path = self.path_of(key)
        if self._hit(path, size):
            return path
        if self._pid != os.getpid():  # forked: locks copied from the parent may look held
            self._locks, self._guard, self._pid = {}, threading.Lock(), os.getpid()
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one thread of this process per key ...
            if self._hit(path, size):
                return path
            os.makedirs(self.folder, exist_ok=True)
            with _locked(os.path.join(self.folder, f".{key}.lock")):  # ... one process per key
                if self._hit(path, size):
                    return path
                self._download(url, fs, path, size=size, checksum=checksum)
        self.evict(keep={path})
        return path

    def _hit(self, path: str, size: int | None) -> bool:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        if size is not None and st.st_size != size:  # left by an older cache of this key
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return False
        self._touch(path)
        return True

    def _touch(self, path: str) -> None:
        """LRU: the modification time is the last use.  Set explicitly, strictly increasing
        in this process: the kernel's file clock ticks only every few milliseconds."""
        self._clock = max(time.time_ns(), self._clock + 1)
        with contextlib.suppress(OSError):
            os.utime(path, ns=(self._clock, self._clock))

    def _download(
        self, url: str, fs: Any, path: str, *, size: int | None, checksum: str | None
    ) -> None:
        tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp-{os.getpid()}-{threading.get_ident()}"
        h = xxhash.xxh64()
        got = 0
        try:
            with fs.open(url, "rb", block_size=_CHUNK) as src, open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    dst.write(chunk)
                    got += len(chunk)
        except FileNotFoundError as err:
            _unlink(tmp)
            raise CacheError(
                f"shard {url!r} is listed in the manifest but missing from the store; "
                "re-run `rntensor convert` with the same destination to rewrite missing shards"
            ) from err
        except OSError as err:
            _unlink(tmp)
            raise StorageError(
                f"cannot download shard {url!r}: {' '.join(str(err).split())[:300]}; "
                "check the endpoint, credentials and network, then retry"
            ) from err
        except BaseException:
            _unlink(tmp)
            raise
        digest = "xxh64:" + h.hexdigest()
        bad = None
        if size is not None and got != size:
            bad = f"{got} bytes, the manifest says {size}"
        elif checksum and checksum.lower() != digest:
            bad = f"checksum {digest}, the manifest says {checksum}"
        if bad:
            _unlink(tmp)
            raise CacheError(
                f"shard {url!r} is corrupt or truncated ({bad}); re-run `rntensor convert` "
                "with the same destination to rewrite it"
            )
        self._touch(tmp)  # before the rename: the file never shows an older time than it has
        os.replace(tmp, path)

    def evict(self, keep: set[str] = frozenset()) -> int:  # type: ignore[assignment]
        """Delete least recently used shards until the folder fits; returns bytes freed."""
        entries = []
        total = 0
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        for name in names:
            if not name.endswith(".arrow") or name.startswith("."):
                continue
            p = os.path.join(self.folder, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            total += st.st_size
            entries.append((st.st_mtime_ns, p, st.st_size))
        freed = 0
        for _, p, nbytes in sorted(entries):
            if total <= self.capacity_bytes:
                break
            if p in keep:
                continue
            _unlink(p)
            total -= nbytes
            freed += nbytes
        return freed

    def size_bytes(self) -> int:
        """Total size of the shards now in the folder."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        total = 0
        for n in names:
            if n.endswith(".arrow") and not n.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(self.folder, n)).st_size
        return total


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class RemoteStore:
    """The remote side of a cache: fsspec reads, and shards through a :class:`ReadThroughCache`.

    Picklable: the filesystem is reopened lazily after unpickling.

    Args:
        root: the cache URL (``s3://bucket/cache/jets``).
        storage_options: fsspec options (endpoint, credentials).
        folder, capacity_bytes: the read-through folder and its size limit.
    """

    def __init__(
        self, root: str, storage_options: Mapping[str, Any] | None, folder: str, capacity_bytes: int
    ) -> None:
        self.root = root
        self.storage_options = dict(storage_options or {})
        self.cache = ReadThroughCache(folder, capacity_bytes)
        self._fs: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}

    def filesystem(self) -> Any:
        if self._fs is None:
            from rntensor.cache.write import dest_filesystem

            self._fs, _ = dest_filesystem(self.root, self.storage_options)
        return self._fs

    def url(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    @staticmethod
    def key(shard: Mapping[str, Any]) -> str:
        return shard.get("key") or hashlib.sha256(shard["path"].encode()).hexdigest()[:32]

    def fetch(self, shard: Mapping[str, Any]) -> str:
        """The local copy of ``shard`` (a manifest record), downloaded if absent."""
        return self.cache.fetch(
            self.key(shard),
            self.url(shard["path"]),
            self.filesystem(),
            size=shard.get("bytes"),
            checksum=shard.get("checksum"),
        )

    def read_columns(self, shard: Mapping[str, Any], names: Sequence[str]) -> pa.Table | None:
        """``names`` of a shard not yet copied locally, by ranged reads; ``None`` if copied."""
        if os.path.exists(self.cache.path_of(self.key(shard))):
            return None
        url = self.url(shard["path"])
        try:
            with self.filesystem().open(url, "rb", block_size=1 << 20) as f:
                fields = ipc.open_file(f).schema.names
                opts = ipc.IpcReadOptions(included_fields=[fields.index(n) for n in names])
                return ipc.open_file(f, options=opts).read_all()
        except (pa.ArrowException, OSError, ValueError) as err:
            raise CacheError(
                f"cannot read columns {list(names)} of shard {url!r}: "
                f"{' '.join(str(err).split())[:300]}; re-run `rntensor convert` with the same "
                "destination if the shard is damaged"
            ) from err
