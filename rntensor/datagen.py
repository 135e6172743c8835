"""A synthetic, NanoAOD-like event generator for tests, examples and benchmarks.

Everything is vectorized with numpy, one cluster at a time, so writing a million events
takes seconds and memory stays bounded by ``cluster_entries``.  Clusters lie on a global
grid of ``cluster_entries`` events and every variable of a cluster draws from its own random
stream keyed by ``(seed, cluster, variable)``, so the events depend only on ``seed`` and
``cluster_entries``: :func:`generate_dataset` gives the same events whatever the number of
files, and a file of ``N`` events holds the first ``N`` events of a longer one.

Fields (one entry per event)::

    run, luminosityBlock, event      int64; event numbers are unique and increasing
    MET_pt, MET_phi, weight          float32
    label                            int32, class 0 or 1 (about half each)
    passTrigger                      bool
    nJet                             int32, Poisson-like (mean ~5, 0 to 20)
    Jet_pt, Jet_eta, Jet_phi,        float32 lists of nJet values, sorted by pt
      Jet_mass, Jet_btag
    nMuon                            int32 (mean ~1.5, many events without muons)
    Muon_pt, Muon_eta, Muon_charge   float32, float32, int32 lists of nMuon values

with ``records=True`` (RNTuple only) also::

    PV       record {x, y, z: float32, npvs: int32}
    Track    list of records {pt, eta, phi: float32}

The label is learnable: class-1 events have more and harder jets, more b-tagged jets,
more muons and larger missing transverse momentum.

A TTree stores ``Jet_*`` (and ``Muon_*``) as C-style arrays sharing the counter branch
``nJet`` (``nMuon``), as NanoAOD does; an RNTuple stores each ``Jet_*`` as its own
vector field plus an ``nJet`` integer field, as ROOT's Snapshot of NanoAOD does.

Command line::

    python -m rntensor.datagen OUT --events 1000000 --format rntuple --files 4
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np

__all__ = ["COMPRESSIONS", "DEFAULT_LEVELS", "FORMATS", "generate", "generate_dataset", "main"]

Format = Literal["rntuple", "ttree"]
FORMATS: tuple[str, ...] = ("rntuple", "ttree")
COMPRESSIONS: tuple[str, ...] = ("zstd", "lz4", "zlib", "lzma")
#: ROOT's default level per algorithm (``kDefaultZSTD = 505`` and so on).
DEFAULT_LEVELS = {"zstd": 5, "lz4": 4, "zlib": 1, "lzma": 7}

_RUN0 = 316_000
_EVENTS_PER_RUN = 250_000
_EVENTS_PER_LUMI = 1_000


# -- the physics (numpy only) ------------------------------------------------------------
def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """float32 values rounded to ``bits`` mantissa bits, as NanoAOD stores most floats."""
    x = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    drop = 23 - bits
    rounded = (x + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return rounded.view(np.float32)


def _phi(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Uniform angles in [-pi, pi], still inside after rounding the mantissa."""
    pi = np.float32(np.pi)
    return np.clip(_round_mantissa(rng.uniform(-np.pi, np.pi, n), bits), -pi, pi)


def _sort_desc_within(values: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Order that sorts positive ``values`` decreasingly inside each event, events in order."""
    # one float64 key (event + something in (0, 0.5) decreasing with value) sorts ~10x
    # faster than lexsort; fall back to lexsort if float64 rounding ever ties two values
    order = np.argsort(parents + 0.5 / (1.0 + values.astype(np.float64)), kind="stable")
    v, p = values[order], parents[order]
    if np.any((np.diff(v) > 0) & (p[1:] == p[:-1])):
        order = np.lexsort((-values, parents))
    return order


def _chunk(
    block: int, n: int, *, seed: int, records: bool
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]]:
    """The first ``n`` events of the cluster that starts at event index ``block``.

    Returns per-event arrays and ``{collection: (counts, {leaf: values})}``.  Every variable
    draws from its own random stream keyed by ``(seed, block, variable)`` and numpy draws
    samples one after the other, so the first ``n`` events do not depend on ``n``: a file
    boundary inside a cluster leaves the events unchanged.
    """
    streams = iter(range(1, 1000))

    def rng() -> np.random.Generator:  # the next variable's own stream
        return np.random.default_rng([int(seed), int(block), next(streams)])

    q = _round_mantissa
    label = (rng().random(n) < 0.5).astype(np.int32)
    signal = label == 1
    event = np.arange(block, block + n, dtype=np.int64) + 1
    flat: dict[str, np.ndarray] = {
        "run": (_RUN0 + (event - 1) // _EVENTS_PER_RUN).astype(np.int64),
        "luminosityBlock": (1 + ((event - 1) % _EVENTS_PER_RUN) // _EVENTS_PER_LUMI).astype(
            np.int64
        ),
        "event": event,
    }

    # jets: more and harder for class 1; a few percent of events have none
    n_jet = rng().poisson(np.where(signal, 5.6, 4.2))
    n_jet[rng().random(n) < 0.03] = 0
    n_jet = np.minimum(n_jet, 20).astype(np.int32)
    jet_parent = np.repeat(np.arange(n, dtype=np.int64), n_jet)
    jet_signal = signal[jet_parent]
    n_jets = len(jet_parent)
    pt = q(15.0 + rng().exponential(np.where(jet_signal, 45.0, 28.0)), 10)
    pt = pt[_sort_desc_within(pt, jet_parent)]
    is_b = rng().random(n_jets) < np.where(jet_signal, 0.35, 0.08)
    b_like, light_like = rng().beta(5.0, 1.5, n_jets), rng().beta(1.0, 6.0, n_jets)
    jets = {
        "pt": pt,
        "eta": q(np.clip(rng().normal(0.0, np.where(jet_signal, 1.3, 1.8)), -4.7, 4.7), 12),
        "phi": _phi(rng(), n_jets, 12),
        "mass": q(pt * rng().uniform(0.04, 0.25, n_jets), 10),
        "btag": q(np.where(is_b, b_like, light_like), 10),
    }

    # muons: mean ~1.5, about a quarter of the events have none
    n_mu = np.minimum(rng().poisson(np.where(signal, 1.8, 1.2)), 8).astype(np.int32)
    n_mus = int(n_mu.sum())
    mu_parent = np.repeat(np.arange(n, dtype=np.int64), n_mu)
    mu_pt = q(3.0 + rng().exponential(np.where(signal[mu_parent], 30.0, 15.0)), 12)
    muons = {
        "pt": mu_pt[_sort_desc_within(mu_pt, mu_parent)],
        "eta": q(np.clip(rng().normal(0.0, 1.2, n_mus), -2.4, 2.4), 12),
        "charge": np.where(rng().random(n_mus) < 0.5, -1, 1).astype(np.int32),
    }

    met = rng().exponential(np.where(signal, 45.0, 25.0))
    sum_pt = np.bincount(jet_parent, weights=pt, minlength=n)
    flat.update(
        MET_pt=q(met, 12),
        MET_phi=_phi(rng(), n, 12),
        label=label,
        weight=rng().lognormal(0.0, 0.2, n).astype(np.float32),
        passTrigger=(met + 0.5 * sum_pt + rng().normal(0.0, 20.0, n)) > 80.0,
    )
    coll: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {
        "Jet": (np.asarray(n_jet), jets),
        "Muon": (np.asarray(n_mu), muons),
    }

    if records:
        n_tr = rng().poisson(3.0, n).astype(np.int32)
        n_trs = int(n_tr.sum())
        flat["PV.x"] = q(rng().normal(0.0, 0.01, n), 10)
        flat["PV.y"] = q(rng().normal(0.0, 0.01, n), 10)
        flat["PV.z"] = q(rng().normal(0.0, 4.0, n), 10)
        flat["PV.npvs"] = rng().poisson(30.0, n).astype(np.int32)
        tracks = {
            "pt": q(0.5 + rng().exponential(5.0, n_trs), 10),
            "eta": q(rng().uniform(-2.5, 2.5, n_trs), 10),
            "phi": _phi(rng(), n_trs, 10),
        }
        coll["Track"] = (n_tr, tracks)
    return flat, coll


def _drop_first(flat: dict[str, np.ndarray], coll: dict[str, Any], k: int) -> tuple[Any, Any]:
    """The events after the first ``k``."""
    if k == 0:
        return flat, coll
    out: dict[str, Any] = {}
    for name, (counts, leaves) in coll.items():
        skip = int(np.sum(counts[:k]))
        out[name] = (counts[k:], {leaf: v[skip:] for leaf, v in leaves.items()})
    return {key: v[k:] for key, v in flat.items()}, out


def _clusters(first_event: int, n_events: int, cluster_entries: int) -> list[tuple[int, int]]:
    """``[start, stop)`` event indices per cluster, on the global grid of ``cluster_entries``."""
    out = []
    pos, stop = first_event, first_event + n_events
    while pos < stop:
        end = min((pos // cluster_entries + 1) * cluster_entries, stop)
        out.append((pos, end))
        pos = end
    return out or [(first_event, first_event)]


# -- layout per format -------------------------------------------------------------------
def _listarray(offsets: np.ndarray, content: Any) -> Any:
    import awkward as ak

    if isinstance(content, np.ndarray):
        content = ak.contents.NumpyArray(content)
    return ak.contents.ListOffsetArray(ak.index.Index64(offsets), content)


def _ttree_data(flat: dict[str, np.ndarray], coll: dict[str, Any]) -> dict[str, Any]:
    import awkward as ak

    data: dict[str, Any] = dict(flat)
    for name, (counts, leaves) in coll.items():
        # one record of lists → uproot writes counter n<name> and branches <name>_<leaf>
        record = ak.contents.RecordArray(
            [ak.contents.NumpyArray(v) for v in leaves.values()], list(leaves)
        )
        data[name] = ak.Array(_listarray(_offsets(counts), record))
    return data


def _rntuple_data(flat: dict[str, np.ndarray], coll: dict[str, Any], records: bool) -> Any:
    import awkward as ak

    fields: dict[str, Any] = {}
    for key, values in flat.items():
        if "." not in key:
            fields[key] = ak.contents.NumpyArray(values)
    for name in ("Jet", "Muon"):
        counts, leaves = coll[name]
        fields[f"n{name}"] = ak.contents.NumpyArray(np.asarray(counts, dtype=np.int32))
        offsets = _offsets(counts)
        for leaf, values in leaves.items():
            fields[f"{name}_{leaf}"] = _listarray(offsets, values)
    if records:
        pv = ["x", "y", "z", "npvs"]
        fields["PV"] = ak.contents.RecordArray(
            [ak.contents.NumpyArray(flat[f"PV.{k}"]) for k in pv], pv
        )
        counts, leaves = coll["Track"]
        record = ak.contents.RecordArray(
            [ak.contents.NumpyArray(v) for v in leaves.values()], list(leaves)
        )
        fields["Track"] = _listarray(_offsets(counts), record)
    return ak.Array(ak.contents.RecordArray(list(fields.values()), list(fields)))


def _ttree_type(values: Any) -> Any:
    return values.dtype if isinstance(values, np.ndarray) else values.type


def _compression(compression: str | None, level: int | None) -> Any:
    import uproot

    if compression is None:
        return None
    return {"zstd": uproot.ZSTD, "lz4": uproot.LZ4, "zlib": uproot.ZLIB, "lzma": uproot.LZMA}[
        compression
    ](DEFAULT_LEVELS[compression] if level is None else level)


def _validate(
    n_events: int,
    fmt: str,
    compression: str | None,
    level: int | None,
    cluster_entries: int,
    records: bool,
) -> None:
    if not isinstance(n_events, (int, np.integer)) or n_events < 0:
        raise ValueError(f"n_events must be an integer >= 0, got {n_events!r}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if compression is not None and compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS} or None, got {compression!r}")
    if level is not None and not 0 <= level <= 9:
        raise ValueError(f"level must be between 0 and 9, got {level!r}")
    if not isinstance(cluster_entries, (int, np.integer)) or cluster_entries < 1:
        raise ValueError(f"cluster_entries must be an integer >= 1, got {cluster_entries!r}")
    if records and fmt != "rntuple":
        raise ValueError("records=True needs fmt='rntuple'; TTree output has no record fields")


def generate(
    path: str | os.PathLike[str],
    *,
    n_events: int,
    fmt: Format = "rntuple",
    compression: str | None = "zstd",
    level: int | None = None,
    seed: int = 0,
    cluster_entries: int = 100_000,
    records: bool = False,
    tree: str = "Events",
    first_event: int = 0,
) -> str:
    """Write ``n_events`` synthetic events to ``path`` with uproot; return the path.

    Args:
        path: output file; its folder is created.
        n_events: number of events.
        fmt: ``"rntuple"`` or ``"ttree"``.
        compression: ``"zstd"``, ``"lz4"``, ``"zlib"``, ``"lzma"`` or ``None``.
        level: compression level, 0-9; ``None`` is ROOT's default for the algorithm.
        seed: random seed; the same arguments give the same events.
        cluster_entries: events per cluster (RNTuple) or per basket (TTree): the file is
            written with one uproot ``extend`` per cluster.  Clusters lie on a global grid,
            so with ``first_event`` not a multiple of it the first cluster is shorter.
        records: add the record field ``PV`` and the list of records ``Track`` (RNTuple only).
        tree: name of the TTree or RNTuple.
        first_event: events are numbered from ``first_event + 1``; used by
            :func:`generate_dataset` to keep event numbers unique over files.
    """
    import uproot

    _validate(n_events, fmt, compression, level, cluster_entries, records)
    if not isinstance(first_event, (int, np.integer)) or first_event < 0:
        raise ValueError(f"first_event must be an integer >= 0, got {first_event!r}")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def build(start: int, stop: int) -> Any:
        block = start // cluster_entries * cluster_entries
        flat, coll = _chunk(block, stop - block, seed=seed, records=records)
        flat, coll = _drop_first(flat, coll, start - block)
        return _ttree_data(flat, coll) if fmt == "ttree" else _rntuple_data(flat, coll, records)

    clusters = _clusters(first_event, n_events, cluster_entries)
    # build cluster i + 1 in a thread while uproot compresses and writes cluster i; at most
    # two clusters are in memory at a time
    with (
        ThreadPoolExecutor(1) as pool,
        uproot.recreate(path, compression=_compression(compression, level)) as f,
    ):
        pending = pool.submit(build, *clusters[0])
        out: Any = None
        for i in range(len(clusters)):
            data = pending.result()
            if i + 1 < len(clusters):
                pending = pool.submit(build, *clusters[i + 1])
            if out is None and fmt == "ttree":
                out = f.mktree(tree, {k: _ttree_type(v) for k, v in data.items()})
            elif out is None:
                out = f.mkrntuple(tree, data.layout.form)
            if n_events > 0:
                out.extend(data)
    return path


def _split(n_events: int, n_files: int) -> list[int]:
    """``n_events`` over ``n_files`` files of growing sizes (the last about twice the first)."""
    weights = np.linspace(1.0, 2.0, n_files)
    sizes = np.floor(weights / weights.sum() * n_events).astype(np.int64)
    sizes[: n_events - int(sizes.sum())] += 1
    return [int(s) for s in sizes]


def generate_dataset(
    folder: str | os.PathLike[str],
    *,
    n_events: int,
    n_files: int,
    fmt: Format = "rntuple",
    compression: str | None = "zstd",
    level: int | None = None,
    seed: int = 0,
    cluster_entries: int = 100_000,
    records: bool = False,
    tree: str = "Events",
    prefix: str = "part",
) -> list[str]:
    """Write ``n_events`` over ``n_files`` files of different sizes; return their paths.

    Files are named ``{prefix}-00000.root``, ... in event order; event numbers continue
    from one file to the next.  Other arguments as in :func:`generate`.
    """
    if not isinstance(n_files, (int, np.integer)) or n_files < 1:
        raise ValueError(f"n_files must be an integer >= 1, got {n_files!r}")
    _validate(n_events, fmt, compression, level, cluster_entries, records)
    folder = os.fspath(folder)
    paths = []
    first = 0
    for i, size in enumerate(_split(n_events, n_files)):
        path = os.path.join(folder, f"{prefix}-{i:05d}.root")
        generate(
            path,
            n_events=size,
            fmt=fmt,
            compression=compression,
            level=level,
            seed=seed,
            cluster_entries=cluster_entries,
            records=records,
            tree=tree,
            first_event=first,
        )
        paths.append(path)
        first += size
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rntensor.datagen OUT --events N [--format F] [--files K] ...``"""
    p = argparse.ArgumentParser(
        prog="python -m rntensor.datagen",
        description="Write synthetic NanoAOD-like events with uproot.  OUT is a .root file "
        "when --files is 1, otherwise a folder that receives part-00000.root, ...",
    )
    p.add_argument("out", metavar="OUT")
    p.add_argument("--events", type=int, required=True, help="total number of events")
    p.add_argument("--format", choices=FORMATS, default="rntuple")
    p.add_argument("--files", type=int, default=1, help="number of files (default 1)")
    p.add_argument("--compression", choices=[*COMPRESSIONS, "none"], default="zstd")
    p.add_argument("--level", type=int, default=None, help="compression level 0-9")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cluster-entries", type=int, default=100_000)
    p.add_argument("--records", action="store_true", help="add PV and Track (RNTuple only)")
    p.add_argument("--tree", default="Events")
    args = p.parse_args(argv)
    kwargs: dict[str, Any] = dict(
        n_events=args.events,
        fmt=args.format,
        compression=None if args.compression == "none" else args.compression,
        level=args.level,
        seed=args.seed,
        cluster_entries=args.cluster_entries,
        records=args.records,
        tree=args.tree,
    )
    try:
        if args.files == 1 and args.out.endswith(".root"):
            paths = [generate(args.out, **kwargs)]
        else:
            paths = generate_dataset(args.out, n_files=args.files, **kwargs)
    except ValueError as err:
        p.error(str(err))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
