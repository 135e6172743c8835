"""Where entries live: open TTree and RNTuple files over fsspec (local, s3), list their fields,
split them into entry ranges aligned to clusters, fingerprint them, and read columns as flat
numpy buffers.

The in-memory column model used by every later stage (schema expressions, transform) is
deliberately small: a per-event column is a 1-d ``numpy.ndarray``; a jagged column (one
variable-length list per event) is a :class:`Jagged` holding ``offsets`` (int64, ``N + 1``,
starting at 0) and a flat ``content`` array.  Hot paths work on those buffers directly.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rntensor.errors import SourceError, StorageError, did_you_mean

__all__ = [
    "Column",
    "FieldInfo",
    "Jagged",
    "Source",
    "expand_inputs",
    "open_source",
    "plan_ranges",
    "split_spec",
    "uproot_options",
]


@dataclass(frozen=True, eq=False)
class Jagged:
    """One variable-length list of values per event, as flat buffers.

    Args:
        offsets: int64 array of length ``N + 1`` with ``offsets[0] == 0``.
        content: flat values, ``len(content) == offsets[-1]``.
    """

    offsets: np.ndarray
    content: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def dtype(self) -> np.dtype:
        return self.content.dtype

    def local_index(self) -> np.ndarray:
        """For every value, its position inside its event's list (0, 1, 2, ...)."""
        idx = np.arange(len(self.content), dtype=np.intp)
        idx -= self.offsets[:-1][self.parents()]
        return idx

    def parents(self) -> np.ndarray:
        """For every value, the index of the event it belongs to."""
        return event_index(self.counts)

    def take_events(self, mask_or_index: np.ndarray) -> Jagged:
        """Keep the events selected by a boolean mask or an index array (in that order)."""
        selector = np.asarray(mask_or_index)
        if selector.dtype == bool:
            if selector.shape != (len(self),):
                raise ValueError(
                    f"boolean mask of shape {selector.shape} for {len(self)} events; "
                    "a mask needs one value per event"
                )
            if selector.all():
                return self
            index = np.flatnonzero(selector)
        else:
            index = selector.astype(np.int64, copy=False).reshape(-1)
        counts = self.counts[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        starts = self.offsets[:-1][index]
        # gather: value position = start of its event + local index
        parent = event_index(counts)
        pos = np.arange(offsets[-1], dtype=np.intp)
        pos += (starts - offsets[:-1])[parent]
        return Jagged(offsets, self.content[pos])


Column = np.ndarray | Jagged


def event_index(counts: np.ndarray) -> np.ndarray:
    """``np.repeat(np.arange(len(counts)), counts)``: for every object, its event's index.

    Built from a scatter of the non-empty events' first positions and a cumulative sum:
    the same cost as ``np.repeat`` in one thread, but, unlike it, numpy releases the GIL for
    both steps, so conversion threads running side by side do not serialize on it.
    """
    counts = np.asarray(counts)
    total = int(counts.sum())
    out = np.zeros(total, dtype=np.intp)
    if total == 0:
        return out
    nonempty = np.flatnonzero(counts)
    first = np.cumsum(counts)
    first -= counts
    # each non-empty event adds the distance from the previous non-empty event's index
    out[first[nonempty]] = np.diff(nonempty, prepend=0)
    return np.cumsum(out, out=out)


@dataclass(frozen=True)
class FieldInfo:
    """What a source field looks like to a schema.

    Args:
        path: name as used in schemas (``Jet_pt``; ``Tracks.pt`` for a sub-field).
        dtype: numpy dtype name of the leaf values (``float32``, ``int64``, ``bool``).
        jagged: ``True`` when each event holds a variable-length list of values.
        collection: for jagged fields, the collection they belong to (``Jet`` for
            ``Jet_pt``, ``Tracks`` for ``Tracks.pt``); fields of one collection share
            offsets.  ``None`` for per-event fields.
        supported: ``False`` for types rntensor cannot turn into tensors (strings,
            nested lists); ``typename`` says what it is.
        typename: the type as ROOT names it.
    """

    path: str
    dtype: str
    jagged: bool
    collection: str | None = None
    supported: bool = True
    typename: str = ""


Kind = Literal["TTree", "RNTuple"]

_SPEC = re.compile(r"^(?P<file>.+?\.root):(?P<obj>[^/:][^:]*)$")


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"run1.root:Events"`` → ``("run1.root", "Events")``; no object → ``(spec, None)``."""
    m = _SPEC.match(spec)
    if m:
        return m["file"], m["obj"]
    return spec, None


def uproot_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``uproot.open``: fsspec options travel as keywords."""
    opts = dict(storage_options or {})
    if url.startswith("s3://"):
        ck = dict(opts.pop("config_kwargs", {}) or {})
        ck.setdefault("max_pool_connections", 64)
        opts["config_kwargs"] = ck
        if "endpoint_url" not in opts and os.environ.get("AWS_ENDPOINT_URL"):
            opts["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
    return opts


def _filesystem(url: str, storage_options: Mapping[str, Any] | None):
    import fsspec

    opts = uproot_options(url, storage_options) if url.startswith("s3://") else {}
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def expand_inputs(
    inputs: Sequence[str], *, storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """Expand paths, globs, folders and s3:// URLs (``file.root:Tree`` kept) into file specs.

    Folders and prefixes expand to the ``*.root`` files below them, sorted.  A pattern or
    folder that matches nothing is a :class:`SourceError`.
    """
    out: list[str] = []
    for spec in inputs:
        path, obj = split_spec(str(spec))
        suffix = f":{obj}" if obj else ""
        if _is_remote(path):
            try:
                fs, p = _filesystem(path, storage_options)
                fs.invalidate_cache()  # listings cached by an earlier call may be stale
                proto = path.split("://", 1)[0]
                if any(c in p for c in "*?["):
                    hits = sorted(fs.glob(p))
                else:
                    # not fs.exists(): s3fs answers False for a forbidden or unreachable bucket
                    try:
                        info = fs.info(p)
                    except FileNotFoundError:
                        hits = []
                    else:
                        if info.get("type") == "directory":
                            hits = sorted(h for h in fs.find(p) if h.endswith(".root"))
                        else:
                            hits = [p]
            except Exception as err:
                if not _is_storage_error(err):
                    raise
                raise StorageError(
                    f"cannot list {path!r}: {_clean(err)}; check the URL, endpoint and credentials"
                ) from err
            if not hits:
                raise SourceError(f"no ROOT files found at {path!r}; check the path or pattern")
            out.extend(f"{proto}://{h}{suffix}" for h in hits)
        else:
            local = path[len("file://") :] if path.startswith("file://") else path
            if any(c in local for c in "*?["):
                hits = sorted(_glob.glob(local, recursive=True))
            elif os.path.isdir(local):
                hits = sorted(_glob.glob(os.path.join(local, "**", "*.root"), recursive=True))
            else:
                hits = [local]
            if not hits:
                raise SourceError(f"no ROOT files match {path!r}; check the path or pattern")
            out.extend(f"{h}{suffix}" for h in hits)
    return out


def _is_storage_error(err: BaseException) -> bool:
    """An error of the storage stack (OS, botocore, aiohttp), as opposed to a bug."""
    mod = type(err).__module__
    return isinstance(err, (OSError, ValueError)) or mod.startswith(
        ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec")
    )


def _clean(err: BaseException) -> str:
    """One line of an exception's text, with anything that looks like a secret removed."""
    text = " ".join(str(err).split()) or type(err).__name__
    text = re.sub(r"(?i)(secret|key|token|signature|credential)[^\s,;]*=\S+", r"\1=***", text)
    return text[:300]


class Source:
    """One TTree or RNTuple in one file.  Picklable: handles reopen lazily in workers.

    Args:
        url: path or URL of the file (``s3://bucket/run1.root``), without ``:tree``.
        tree: name of the TTree/RNTuple; ``None`` picks the only one in the file.
        storage_options: fsspec options (``endpoint_url``, ``key``, ``secret``, ...).
    """

    def __init__(
        self,
        url: str,
        *,
        tree: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self._tree = tree
        self._lock = threading.Lock()
        self._file: Any = None
        self._obj: Any = None
        self._fields: dict[str, FieldInfo] | None = None

    # -- pickling: never ship open handles --------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lock=None, _file=None, _obj=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Source({self.url!r}, tree={self._tree!r})"

    @property
    def name(self) -> str:
        """A short, location-independent name: the file's base name."""
        return os.path.basename(self.url.rstrip("/"))

    @property
    def where(self) -> str:
        return f"in file {self.url}" + (f":{self._tree}" if self._tree else "")

    # -- opening ----------------------------------------------------------------------
    def _open(self) -> Any:
        if self._obj is not None:
            return self._obj
        import uproot

        with self._lock:
            if self._obj is not None:
                return self._obj
            try:
                # array_cache=None: every range is read once, caching arrays only holds memory
                f = uproot.open(
                    self.url, array_cache=None, **uproot_options(self.url, self.storage_options)
                )
            except FileNotFoundError as err:
                raise SourceError(
                    f"file not found: {self.url}; check the path (or the bucket and key)"
                ) from err
            except PermissionError as err:
                raise StorageError(
                    f"permission denied opening {self.url}; check credentials and access rights"
                ) from err
            except Exception as err:
                raise _classify(err, self.url, "opening the file") from err
            try:
                if self._tree is None:
                    self._tree = _pick_tree(f, self.url)
                try:
                    obj = f[self._tree]
                except Exception as err:
                    if type(err).__name__ == "KeyInFileError" or isinstance(err, KeyError):
                        names = _tree_names(f)
                        raise SourceError(
                            f"no TTree or RNTuple named {self._tree!r} in {self.url};"
                            f"{did_you_mean(self._tree, names) or ' it holds ' + repr(names)}"
                            " — pass FILE.root:NAME or set 'tree' in the schema"
                        ) from err
                    raise
                if _kind_of(obj) is None:
                    raise SourceError(
                        f"{self._tree!r} in {self.url} is a {type(obj).__name__}, not a TTree or "
                        "RNTuple; name a tree with FILE.root:NAME"
                    )
            except SourceError:
                f.close()
                raise
            except Exception as err:
                f.close()
                raise _classify(err, self.url, "reading the file's directory") from err
            try:
                _warm_up(obj)
            except Exception as err:
                f.close()
                raise _classify(err, self.url, f"reading the metadata of {self._tree!r}") from err
            self._file, self._obj = f, obj
            return obj

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._obj = None

    # -- metadata ---------------------------------------------------------------------
    @property
    def tree(self) -> str:
        self._open()
        assert self._tree is not None
        return self._tree

    @property
    def kind(self) -> Kind:
        kind = _kind_of(self._open())
        assert kind is not None
        return kind

    @contextlib.contextmanager
    def _reading(self, doing: str, context: str | None = None) -> Iterator[None]:
        """Turn whatever uproot raises (truncated metadata, bad pages) into a SourceError."""
        try:
            yield
        except (SourceError, MemoryError):
            raise
        except Exception as err:
            raise _classify(err, self.url, doing, context=context) from err

    @property
    def num_entries(self) -> int:
        obj = self._open()
        with self._reading("reading the entry count"):
            return int(obj.num_entries)

    def cluster_starts(self) -> list[int]:
        """Entry numbers where clusters start, with ``num_entries`` appended."""
        obj = self._open()
        n = self.num_entries
        with self._reading("reading the cluster list"):
            if self.kind == "RNTuple":
                starts = [int(c.num_first_entry) for c in obj.cluster_summaries]
            else:
                starts = [int(x) for x in obj.common_entry_offsets()]
        starts = sorted({s for s in starts if 0 <= s < n} | {0})
        return [*starts, n] if n > 0 else [0]

    @property
    def fields(self) -> dict[str, FieldInfo]:
        """Every readable field by path, records flattened to ``a.b`` paths."""
        if self._fields is None:
            obj = self._open()
            with self._reading("reading the field list"):
                fields = _rntuple_fields(obj) if self.kind == "RNTuple" else _ttree_fields(obj)
            self._fields = fields
        return self._fields

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the file's content: size plus ETag (S3) or mtime (POSIX)."""
        try:
            fs, path = _filesystem(self.url, self.storage_options)
            fs.invalidate_cache(path)  # a cached listing may hold an old ETag / size
            info = fs.info(path)
        except FileNotFoundError as err:
            raise SourceError(f"file not found: {self.url}; check the path") from err
        except Exception as err:
            raise _classify(err, self.url, "looking up the file") from err
        fp: dict[str, Any] = {"size": int(info.get("size") or 0)}
        etag = info.get("ETag") or info.get("etag")
        if etag:
            fp["etag"] = str(etag).strip('"')
        else:
            mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
            fp["mtime"] = float(mtime.timestamp()) if hasattr(mtime, "timestamp") else mtime
        return fp

    # -- reading ----------------------------------------------------------------------
    def read(self, paths: Sequence[str], entry_start: int, entry_stop: int) -> dict[str, Column]:
        """Read ``paths`` for entries ``[entry_start, entry_stop)`` as flat buffers."""
        obj = self._open()
        known = self.fields
        for p in paths:
            if p not in known:
                hint = did_you_mean(p, known) or f" the file has {sorted(known)[:20]!r}"
                raise SourceError(f"field {p!r} not found;{hint}", context=self.where)
            if not known[p].supported:
                raise SourceError(
                    f"field {p!r} has type {known[p].typename!r}, which rntensor cannot turn "
                    "into a tensor column; use a numeric field or a list of numbers",
                    context=self.where,
                )
        if not paths:
            return {}
        where = f"{self.where}, entries {entry_start}-{entry_stop}"
        try:
            if self.kind == "RNTuple":
                tops = sorted({p.split(".", 1)[0] for p in paths})
                arrays = obj.arrays(
                    tops, entry_start=entry_start, entry_stop=entry_stop, library="ak"
                )
            else:
                arrays = obj.arrays(
                    filter_name=list(paths),
                    entry_start=entry_start,
                    entry_stop=entry_stop,
                    library="ak",
                )
        except SourceError:
            raise
        except MemoryError:
            raise
        except Exception as err:
            raise _classify(err, self.url, "reading", context=where) from err
        out: dict[str, Column] = {}
        for p in paths:
            arr = arrays
            for part in p.split(".") if self.kind == "RNTuple" else [p]:
                arr = arr[part]
            try:
                out[p] = to_column(arr)
            except SourceError as err:
                raise err.with_context(f"field {p!r} {where}") from err
        return out


def to_column(array: Any) -> Column:
    """An awkward array of numbers or lists of numbers → numpy array or :class:`Jagged`."""
    import awkward as ak

    layout = ak.to_layout(array)
    if layout.is_numpy:
        return np.asarray(layout.data)
    if layout.is_list:
        if not isinstance(layout, ak.contents.ListOffsetArray):
            layout = ak.to_layout(ak.to_packed(array))
        offsets = np.asarray(layout.offsets, dtype=np.int64)
        content = layout.content
        if isinstance(content, ak.contents.NumpyArray):
            data = np.asarray(content.data)[offsets[0] : offsets[-1]]
            if offsets[0] != 0:
                offsets = offsets - offsets[0]
            return Jagged(offsets, data)
        if content.is_record or content.is_list:
            pass
    raise SourceError(f"cannot turn type {ak.type(array)} into a tensor column")


def _warm_up(obj: Any) -> None:
    """Build uproot's lazily parsed RNTuple metadata now, while ``_open`` holds the lock.

    Some of those caches (column records by field, related field ids) are published before
    they are filled, so threads racing to build them on first use read partial tables
    ("The field_id: 0 is missing from the columns records").  Parsing them once, up
    front, also reports a truncated header or footer when the file is opened.
    """
    if _kind_of(obj) == "RNTuple":
        obj.to_akform()
        obj.all_fields  # noqa: B018
        obj.cluster_summaries  # noqa: B018
        obj.page_link_list  # noqa: B018


def _kind_of(obj: Any) -> Kind | None:
    cls = type(obj).__name__
    if "RNTuple" in cls:
        return "RNTuple"
    if hasattr(obj, "branches") and hasattr(obj, "num_entries"):
        return "TTree"
    return None


def _tree_names(f: Any) -> list[str]:
    names = []
    for key, cls in f.classnames(recursive=True).items():
        if cls in ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple") or "RNTuple" in cls:
            names.append(key.split(";")[0])
    return sorted(set(names))


def _pick_tree(f: Any, url: str) -> str:
    names = _tree_names(f)
    if len(names) == 1:
        return names[0]
    if not names:
        raise SourceError(f"no TTree or RNTuple in {url}; is it the right file?")
    if "Events" in names:
        return "Events"
    raise SourceError(
        f"{url} holds several trees {names}; name one with FILE.root:NAME or 'tree' in the schema"
    )


def _classify(
    err: BaseException, url: str, doing: str, *, context: str | None = None
) -> SourceError:
    text = _clean(err)
    low = text.lower()
    if isinstance(err, TypeError) and "keyword argument" in low:
        return SourceError(
            f"invalid storage_options for {url}: {text}; use the filesystem's option names "
            "(s3fs: endpoint_url, key, secret, client_kwargs, config_kwargs)",
            context=context,
        )
    if "not a root file" in low or ("magic" in low and "root" in low):
        return SourceError(
            f"{url} is not a ROOT file ({text}); check that the path points to a .root file",
            context=context,
        )
    network = (
        "connect",
        "timeout",
        "timed out",
        "endpoint",
        "credential",
        "access denied",
        "forbidden",
        "nosuchbucket",
        "throttl",
        "503",
        "502",
        "500",
    )
    if any(w in low for w in network) or type(err).__module__.startswith(("botocore", "aiohttp")):
        return StorageError(
            f"storage error while {doing} {url}: {text}; check the endpoint, credentials and "
            "network, then re-run (finished shards are kept)",
            context=context,
        )
    return SourceError(
        f"{url} looks truncated or corrupt: {type(err).__name__} while {doing}: {text}; "
        "re-copy the file or use --skip-bad to convert the rest",
        context=context,
    )


_DTYPES = {
    "float": "float32",
    "double": "float64",
    "std::int64_t": "int64",
    "std::int32_t": "int32",
    "std::int16_t": "int16",
    "std::int8_t": "int8",
    "std::uint64_t": "uint64",
    "std::uint32_t": "uint32",
    "std::uint16_t": "uint16",
    "std::uint8_t": "uint8",
    "bool": "bool",
    "int": "int32",
    "Long64_t": "int64",
    "Int_t": "int32",
    "Float_t": "float32",
    "Double_t": "float64",
    "Bool_t": "bool",
    "UInt_t": "uint32",
    "ULong64_t": "uint64",
}


def _ttree_fields(tree: Any) -> dict[str, FieldInfo]:
    import uproot

    out: dict[str, FieldInfo] = {}
    for b in tree.itervalues(recursive=True):
        interp = b.interpretation
        name = b.name
        if isinstance(interp, uproot.interpretation.numerical.AsDtype) and not interp.inner_shape:
            out[name] = FieldInfo(name, str(interp.to_dtype), False, None, True, b.typename)
        elif (
            isinstance(interp, uproot.interpretation.jagged.AsJagged)
            and isinstance(interp.content, uproot.interpretation.numerical.AsDtype)
            and not interp.content.inner_shape
        ):
            coll = _collection_name(name, b.count_branch.name if b.count_branch else None)
            out[name] = FieldInfo(name, str(interp.content.to_dtype), True, coll, True, b.typename)
        else:
            out[name] = FieldInfo(name, "object", False, None, False, b.typename)
    return out


def _collection_name(name: str, counter: str | None) -> str:
    if counter and counter.startswith("n") and len(counter) > 1:
        return counter[1:]
    if "_" in name:
        return name.split("_", 1)[0]
    return counter or name


def _rntuple_fields(ntuple: Any) -> dict[str, FieldInfo]:
    import awkward as ak

    form = ntuple.to_akform()
    form = form[0] if isinstance(form, tuple) else form
    out: dict[str, FieldInfo] = {}

    def leaf(path: str, f: Any, jagged: bool, coll: str | None) -> None:
        if isinstance(f, ak.forms.NumpyForm) and not f.inner_shape:
            out[path] = FieldInfo(path, f.primitive, jagged, coll, True, "")
        else:
            out[path] = FieldInfo(path, "object", jagged, coll, False, str(f.type))

    for name, f in zip(form.fields, form.contents, strict=True):
        if isinstance(f, ak.forms.RecordForm):
            for sub, sf in zip(f.fields, f.contents, strict=True):
                leaf(f"{name}.{sub}", sf, False, None)
        elif isinstance(f, ak.forms.ListOffsetForm) and isinstance(f.content, ak.forms.RecordForm):
            for sub, sf in zip(f.content.fields, f.content.contents, strict=True):
                leaf(f"{name}.{sub}", sf, True, name)
        elif isinstance(f, ak.forms.ListOffsetForm):
            if f.parameters.get("__array__") == "string":
                out[name] = FieldInfo(name, "object", False, None, False, "string")
            else:
                leaf(name, f.content, True, _collection_name(name, None))
        else:
            leaf(name, f, False, None)
    return out


def plan_ranges(cluster_starts: Sequence[int], *, target_entries: int) -> list[tuple[int, int]]:
    """Group whole clusters into entry ranges of about ``target_entries`` each.

    Boundaries always fall on cluster starts, so no task decompresses a cluster another
    task also needs; a single cluster larger than the target becomes its own range.
    """
    if len(cluster_starts) < 2:
        return []
    target = max(1, int(target_entries))
    ranges: list[tuple[int, int]] = []
    start = cluster_starts[0]
    for b in cluster_starts[1:]:
        if b - start >= target:
            ranges.append((start, b))
            start = b
    end = cluster_starts[-1]
    if start < end:
        if ranges and (end - start) < target // 4:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    return ranges


def open_source(
    spec: str,
    *,
    tree: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Source:
    """Open ``path``, ``path:TREE`` or ``s3://bucket/key.root[:TREE]`` lazily."""
    url, obj = split_spec(spec)
    if url.startswith("file://"):
        url = url[len("file://") :]
    return Source(url, tree=obj or tree, storage_options=storage_options)
