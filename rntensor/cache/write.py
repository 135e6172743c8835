"""Writing the cache: tables → Arrow IPC shards, sidecars and the manifest, all atomic.

See ``FORMAT.md`` beside this module for the layout.  Every file appears whole or not at all:
POSIX writes go to a temporary name in the same folder and are renamed; object stores get
one PUT of the complete bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from rntensor.cache import FORMAT_VERSION, MANIFEST_NAME, SHARDS_DIR
from rntensor.errors import CacheError, StorageError

__all__ = [
    "dest_filesystem",
    "load_manifest",
    "load_sidecars",
    "shard_key",
    "table_to_batch",
    "write_bytes_atomic",
    "write_manifest",
    "write_shard",
]


def dest_filesystem(dest: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a cache destination (folder or s3:// prefix)."""
    import fsspec

    opts = dict(storage_options or {})
    if dest.startswith("s3://"):
        from rntensor.sources import uproot_options

        opts = uproot_options(dest, opts)
        ck = opts.pop("config_kwargs", None)
        if ck:
            opts.setdefault("config_kwargs", ck)
    fs, root = fsspec.core.url_to_fs(dest, **opts)
    return fs, root.rstrip("/")


def shard_key(
    *,
    source_name: str,
    tree: str,
    fingerprint: Mapping[str, Any],
    entry_start: int,
    entry_stop: int,
    schema_fingerprint: str,
) -> str:
    """The content address of a shard (see FORMAT.md)."""
    doc = [
        source_name,
        tree,
        dict(fingerprint),
        entry_start,
        entry_stop,
        schema_fingerprint,
        FORMAT_VERSION,
    ]
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def table_to_batch(
    table: Mapping[str, np.ndarray], columns: Mapping[str, Mapping[str, Any]]
) -> pa.RecordBatch:
    """A table (see :mod:`rntensor.transform`) as one Arrow record batch, zero-copy where possible."""
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name, info in columns.items():
        kind = info["kind"]
        v = table[name]
        if kind in ("padded", "flat", "mask"):
            width = int(np.prod(info["shape"]))
            flat = v.reshape(-1)
            if kind == "mask":
                flat = flat.view(np.uint8)
            arr: pa.Array = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
        elif kind == "ragged":
            f = int(info["shape"][0])
            inner = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), f)
            arr = pa.LargeListArray.from_arrays(pa.array(table[f"{name}_offsets"]), inner)
        else:
            arr = pa.array(v)
        arrays.append(arr)
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


class _HashingSink:
    """A write-only file that hashes (xxh64) and counts what passes through to ``raw``."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.hash = xxhash.xxh64()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hash.update(view)
        self.size += view.nbytes
        self.raw.write(view)
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True


def _stream_shard(
    raw: Any, batch: pa.RecordBatch, meta: Mapping[str, Any], compression: str | None
) -> _HashingSink:
    sink = _HashingSink(raw)
    schema = batch.schema.with_metadata({b"rntensor": json.dumps(meta).encode()})
    options = pa.ipc.IpcWriteOptions(compression=compression) if compression else None
    with pa.PythonFile(sink, mode="w") as f, pa.ipc.new_file(f, schema, options=options) as writer:
        writer.write_batch(batch)
    return sink


@contextlib.contextmanager
def _atomic_open(fs: Any, path: str, *, fsync: bool = False) -> Iterator[Any]:
    """A binary file to write ``path`` through, which readers see whole or not at all.

    POSIX: a temporary name in the same folder, renamed on success and removed on failure.
    Object stores: one upload (multipart when large) completed on success and discarded on
    failure.  OS errors become a :class:`StorageError` naming the path.
    """
    try:
        if _is_local(fs):
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            tmp = os.path.join(
                folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            )
            try:
                with open(tmp, "wb") as raw:
                    yield raw
                    if fsync:
                        raw.flush()
                        os.fsync(raw.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raw = fs.open(path, "wb")
            try:
                yield raw
            except BaseException:
                raw.discard()  # abort the upload: no partial object
                raise
            raw.close()
    except OSError as err:
        raise StorageError(
            f"cannot write {path}: {err}; check the destination is writable and has space"
        ) from err


def _write_shard_file(
    fs: Any, path: str, batch: pa.RecordBatch, meta: Mapping[str, Any], compression: str | None
) -> tuple[int, str]:
    """Stream the IPC file to its destination, hashing on the way; (bytes, xxh64 hex).

    No second in-memory copy of the shard is made.
    """
    with _atomic_open(fs, path) as raw:
        sink = _stream_shard(raw, batch, meta, compression)
    return sink.size, sink.hash.hexdigest()


def write_bytes_atomic(fs: Any, path: str, data: bytes | pa.Buffer) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing."""
    with _atomic_open(fs, path, fsync=True) as raw:
        raw.write(memoryview(data))


def _is_local(fs: Any) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return proto in ("file", "local")


def write_shard(
    fs: Any,
    root: str,
    key: str,
    table: Mapping[str, np.ndarray],
    columns: Mapping[str, Mapping[str, Any]],
    *,
    record: dict[str, Any],
    compression: str | None = None,
) -> dict[str, Any]:
    """Write one shard and its sidecar; returns the shard's manifest record.

    ``record`` carries the source, entry range and statistics; rows, bytes, path and checksum
    are added here.  The sidecar (``shards/<key>.json``) is written after the shard, so a shard
    counts as finished only once both exist.
    """
    batch = table_to_batch(table, columns)
    meta = {"format_version": FORMAT_VERSION, "key": key}
    rel = f"{SHARDS_DIR}/{key}.arrow"
    nbytes, checksum = _write_shard_file(fs, f"{root}/{rel}", batch, meta, compression)
    rec = dict(record)
    rec.update(
        path=rel, key=key, rows=int(batch.num_rows), bytes=nbytes, checksum="xxh64:" + checksum
    )
    write_bytes_atomic(fs, f"{root}/{SHARDS_DIR}/{key}.json", json.dumps(rec).encode())
    return rec


def load_sidecars(fs: Any, root: str, keys: set[str]) -> dict[str, dict[str, Any]]:
    """Records of finished shards among ``keys`` (both the shard and its sidecar present)."""
    folder = f"{root}/{SHARDS_DIR}"
    try:
        names = {os.path.basename(p) for p in fs.ls(folder, detail=False)}
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise StorageError(f"cannot list {folder}: {err}") from err
    found: dict[str, dict[str, Any]] = {}
    for key in keys:
        if f"{key}.arrow" in names and f"{key}.json" in names:
            try:
                found[key] = json.loads(fs.cat_file(f"{folder}/{key}.json"))
            except (OSError, ValueError):
                continue  # unreadable sidecar: the shard is redone
    return found


def load_manifest(fs: Any, root: str) -> dict[str, Any] | None:
    """The manifest at ``root``, or ``None`` when there is none."""
    path = f"{root}/{MANIFEST_NAME}"
    try:
        text = fs.cat_file(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StorageError(f"cannot read {path}: {err}") from err
    try:
        manifest = json.loads(text)
    except ValueError as err:
        raise CacheError(
            f"manifest {path} is not valid JSON ({err}); delete it and re-run rntensor convert"
        ) from err
    return manifest


def write_manifest(fs: Any, root: str, manifest: Mapping[str, Any]) -> None:
    """Write the manifest last and atomically."""
    write_bytes_atomic(
        fs, f"{root}/{MANIFEST_NAME}", json.dumps(manifest, indent=1, sort_keys=False).encode()
    )
