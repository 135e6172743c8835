"""rntensor.torch: sharding, shuffling, splits, resume, collation of a synthetic cache.

Most sharding checks run the dataset in-process and emulate the DataLoader workers
(``iter_numpy(worker, workers)`` re-interleaved round-robin, which is what torch does); a few
tests start real worker processes to pin that equivalence down.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from _cache_factory import copy_to_memory, expected_rows, write_cache
from _contracts import (
    assert_deterministic,
    assert_pickle_roundtrip,
    assert_resume_from_midpoint,
    assert_same_batches,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from rntensor.errors import CacheError, SchemaError
from rntensor.torch import SPLITS, CacheDataset, DataLoader, DevicePrefetcher, StreamDataset
from rntensor.torch.plan import (
    BatchCutter,
    Chunker,
    WindowShuffle,
    batch_positions,
    chunk_pieces,
    epoch_rng,
)

SOURCES = (("run1.root", 300), ("run2.root", 200), ("run3.root", 157))
NAMES = [n for n, _ in SOURCES]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cache")
    return str(dest), write_cache(dest, SOURCES)


def rows_of(batches) -> list[tuple[str, int]]:
    """(source name, entry) of every event, in order (needs keep=True)."""
    out = []
    for b in batches:
        run = np.asarray(b["run"])
        ent = np.asarray(b["_entry"])
        out += [(NAMES[r], int(e)) for r, e in zip(run.tolist(), ent.tolist(), strict=True)]
    return out


def emulate(ds: CacheDataset, workers: int, chunk: int = 1) -> list[dict[str, np.ndarray]]:
    """The batches torch's DataLoader yields with ``workers`` processes: each worker's
    chunks of ``chunk`` batches, round-robin."""
    streams = []
    for w in range(workers):
        mine = list(ds.iter_numpy(w, workers, chunk))
        streams.append([mine[i : i + chunk] for i in range(0, len(mine), chunk)])
    return [b for turn in itertools.zip_longest(*streams) for g in turn if g for b in g]


def split_of(rows, split):
    from rntensor.torch import split_mask

    keep = []
    for name, entry in rows:
        if split_mask(name, np.array([entry]), split, (0.8, 0.1, 0.1))[0]:
            keep.append((name, entry))
    return keep


@pytest.mark.parametrize("split", [None, "train"])
@pytest.mark.parametrize("even_split", [False, "drop", "repeat"])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_exactly_once(cache, world_size, workers, even_split, split):
    group = 1 if workers == 1 else 2
    path, manifest = cache
    want = expected_rows(manifest) if split is None else split_of(expected_rows(manifest), split)
    per_rank = []
    for rank in range(world_size):
        ds = CacheDataset(
            path, batch_size=16, shuffle=True, seed=3, shuffle_buffer=40, split=split,
            rank=rank, world_size=world_size, even_split=even_split, keep=True,
        )  # fmt: skip
        ds.set_epoch(1)
        batches = emulate(ds, workers, group)
        assert len(batches) == len(ds)
        per_rank.append(rows_of(batches))
        assert len(per_rank[-1]) == ds.num_rows
    got = [r for rows in per_rank for r in rows]
    counts = [len(r) for r in per_rank]
    n = len(want)
    if even_split == "drop":
        assert counts == [n // world_size] * world_size
        assert len(set(got)) == len(got) and set(got) <= set(want)
    elif even_split == "repeat":
        assert counts == [-(-n // world_size)] * world_size
        assert set(got) == set(want) and len(got) - len(set(got)) == sum(counts) - n
    else:
        assert max(counts) - min(counts) <= 1
        assert sorted(got) == sorted(want)  # every event of the split exactly once


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_real_workers_match_emulation_and_each_other(cache):
    path, _ = cache

    def make(workers):
        return lambda: DataLoader(
            path, batch_size=16, shuffle=True, seed=5, shuffle_buffer=64, split="train",
            rank=1, world_size=2, even_split="drop", keep=True, num_workers=workers,
            ragged="offsets",
        )  # fmt: skip

    assert_deterministic(make(0), epochs=(0, 1), other=make(2))
    ds = make(0)().dataset
    ds.set_epoch(1)
    emulated = [{k: torch.from_numpy(v) for k, v in b.items()} for b in emulate(ds, 3, 2)]
    loader = make(3)()
    loader.chunk_batches = 2
    loader.set_epoch(1)
    assert_same_batches(list(loader), emulated)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch(cache, workers):
    path, _ = cache

    def make():
        return DataLoader(
            path, batch_size=16, shuffle=True, seed=11, shuffle_buffer=50, split="train",
            rank=0, world_size=2, even_split="repeat", keep=True, num_workers=workers,
        )  # fmt: skip

    n, k = assert_resume_from_midpoint(make, epoch=2, stop_after=7)
    assert n > k > 0


def test_resume_fast_forward_skips_shards(cache, monkeypatch):
    path, _ = cache
    loader = DataLoader(path, batch_size=16, shuffle=True, seed=1, shuffle_buffer=16)
    reads: list[int] = []
    real = loader.dataset.reader.read_shard
    monkeypatch.setattr(
        loader.dataset.reader, "read_shard", lambda i, c=None: reads.append(i) or real(i, c)
    )
    full = list(loader)
    assert len(reads) == len(loader.dataset.reader.shards)
    state = loader.state_dict()
    state["batches_yielded"] = len(full) - 2
    reads.clear()
    loader.load_state_dict(state)
    tail = list(loader)
    assert_same_batches(tail, full[-2:])
    assert 0 < len(reads) <= 3  # only the shards under the last two batches' window


def test_state_dict_checks(cache):
    path, _ = cache
    a = DataLoader(path, batch_size=16, rank=0, world_size=2)
    state = a.state_dict()
    with pytest.raises(ValueError, match=r"world_size=2.*world_size=3"):
        DataLoader(path, batch_size=16, rank=0, world_size=3).load_state_dict(state)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(path, batch_size=8, rank=0, world_size=2).load_state_dict(state)
    b = DataLoader(path, batch_size=16, rank=1, world_size=2)
    b.load_state_dict({**state, "epoch": 4, "batches_yielded": 3})  # another rank's state is fine
    assert len(list(b)) == len(b) - 3
    b.set_epoch(5)
    assert len(list(b)) == len(b)


def test_determinism_seed_and_epoch(cache):
    path, _ = cache

    def order(seed, epoch):
        ld = DataLoader(path, batch_size=32, shuffle=True, seed=seed, keep=True)
        ld.set_epoch(epoch)
        return rows_of(ld)

    a = order(1, 0)
    assert a == order(1, 0)
    assert a != order(1, 1) and a != order(2, 0)
    assert sorted(a) == sorted(order(1, 1))
    plain = DataLoader(path, batch_size=32, keep=True)
    assert rows_of(plain) == expected_rows(plain.dataset.reader.manifest)

    def make(chunk):
        return lambda: DataLoader(
            path, batch_size=16, shuffle=True, seed=7, shuffle_buffer=80, split="train",
            keep=True, chunk_batches=chunk, ragged="offsets",
        )  # fmt: skip

    assert_deterministic(make(1), epochs=(0,), other=make(5))  # chunking changes nothing


@pytest.mark.parametrize("threads", [1, 3])
def test_gather_threads_change_nothing(cache, threads):
    """Helper threads (planning ahead, sharing the gathers) yield the same batches, in order,
    as none; an early break leaves no thread behind."""
    import threading

    path, _ = cache

    def batches(**kw):
        ld = DataLoader(
            path, batch_size=16, shuffle=True, seed=3, shuffle_buffer=120, keep=True,
            ragged="offsets", chunk_batches=2, **kw,
        )  # fmt: skip
        return [{k: v.numpy().copy() for k, v in b.items()} for b in ld]

    inline, threaded = batches(gather_threads=0), batches(gather_threads=threads)
    assert len(inline) == len(threaded)
    for a, b in zip(inline, threaded, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    ld = DataLoader(path, batch_size=16, shuffle=True, gather_threads=threads)
    for i, _ in enumerate(ld):
        if i == 3:
            break
    import gc

    gc.collect()
    assert not [t for t in threading.enumerate() if t.name.startswith("rntensor-gather")]
    with pytest.raises(ValueError, match="gather_threads"):
        DataLoader(path, gather_threads=-1)


def test_splits_disjoint_covering_and_stable(tmp_path):
    a = write_cache(tmp_path / "a", SOURCES, shard_entries=64)
    reordered = list(reversed(SOURCES))  # other file order, other shard cuts, other manifest order
    b = write_cache(tmp_path / "b", reordered, shard_entries=50, shard_order=None)
    got = {}
    for name, path in (("a", tmp_path / "a"), ("b", tmp_path / "b")):
        for split in SPLITS:
            ld = DataLoader(path, batch_size=64, split=split, columns=["_entry", "run"])
            names = [n for n, _ in (SOURCES if name == "a" else reordered)]
            got[name, split] = {
                (names[r], e)
                for bt in ld
                for r, e in zip(bt["run"].tolist(), bt["_entry"].tolist(), strict=True)
            }
    everything = set(expected_rows(a))
    assert everything == set(expected_rows(b))
    for name in ("a", "b"):
        parts = [got[name, s] for s in SPLITS]
        assert set().union(*parts) == everything
        assert sum(len(p) for p in parts) == len(everything)  # disjoint
    for split in SPLITS:
        assert got["a", split] == got["b", split]
    frac = len(got["a", "train"]) / len(everything)
    assert 0.72 < frac < 0.88


def test_normalization(cache):
    path, manifest = cache
    raw = next(iter(DataLoader(path, batch_size=64, normalize=False)))
    norm = next(iter(DataLoader(path, batch_size=64)))
    st = manifest["stats"]["jets"]
    mean = np.array([st[f"j{k}"]["mean"] for k in range(5)], np.float32)
    std = np.array([st[f"j{k}"]["std"] for k in range(5)], np.float32)
    mask = raw["jets_mask"].numpy()
    assert mask.any() and (~mask).any()
    want = (raw["jets"].numpy() - mean) / std
    got = norm["jets"].numpy()
    np.testing.assert_allclose(got[mask], want[mask], rtol=1e-5, atol=1e-5)
    assert (got[~mask] == 0.0).all()  # padded slots keep the pad value
    real = np.concatenate(
        [b["jets"][b["jets_mask"]].numpy() for b in DataLoader(path, batch_size=128)]
    )
    np.testing.assert_allclose(real.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(real.std(0), 1, atol=1e-3)
    assert torch.equal(raw["scalars"], norm["scalars"])  # normalize: none


def test_ragged_nested_and_offsets(cache):
    path, _ = cache
    kw = dict(batch_size=32, shuffle=True, seed=2, shuffle_buffer=100, keep=True, chunk_batches=3)
    offs = list(DataLoader(path, ragged="offsets", **kw))
    nests = list(DataLoader(path, ragged="nested", **kw))
    assert len(offs) == len(nests) > 3
    for off, nested in zip(offs, nests, strict=True):  # every batch of every chunk
        e = off["_entry"].numpy()
        assert off["muons_offsets"][0] == 0
        assert np.array_equal(np.diff(off["muons_offsets"].numpy()), e % 4)
        assert np.array_equal(off["muons"][:, 0].numpy(), np.repeat(e, e % 4))
        mu = nested["muons"]
        assert mu.is_nested and mu.size(0) == len(e) and mu.size(2) == 3
        assert "muons_offsets" not in nested
        assert torch.equal(mu.values(), off["muons"])
        assert torch.equal(mu.offsets(), off["muons_offsets"])
        for i, t in enumerate(mu.unbind()):
            assert t.shape == (e[i] % 4, 3)


def test_one_hot_columns_keep(cache):
    path, _ = cache
    b = next(iter(DataLoader(path, batch_size=8, one_hot=True, columns=["target", "jets"])))
    assert set(b) == {"target", "jets", "jets_mask"}
    assert b["target"].shape == (8, 3) and b["target"].dtype == torch.float32
    assert torch.equal(b["target"].sum(1), torch.ones(8))
    plain = next(iter(DataLoader(path, batch_size=8)))
    assert set(plain) == {"jets", "jets_mask", "muons", "scalars", "target", "weight"}
    with pytest.raises(SchemaError, match="did you mean 'jets'"):
        DataLoader(path, columns=["jet"])


def test_len_and_drop_last(cache):
    path, manifest = cache
    n = manifest["num_rows"]
    for drop_last in (False, True):
        ld = DataLoader(path, batch_size=50, drop_last=drop_last, shuffle=True)
        sizes = [len(b["target"]) for b in ld]
        assert len(sizes) == len(ld) == (n // 50 if drop_last else -(-n // 50))
        assert sum(sizes) == (n - n % 50 if drop_last else n)


def test_pickle_dataset(cache):
    path, _ = cache
    ds = CacheDataset(path, batch_size=16, shuffle=True, seed=4, split="val", keep=True)
    ds.set_epoch(3)
    list(ds.iter_numpy())  # opened, then pickled as a worker would get it

    def same(a, b):
        assert_same_batches(list(b.iter_numpy(1, 2)), list(a.iter_numpy(1, 2)))

    assert_pickle_roundtrip(ds, same)


def test_errors_surface(tmp_path):
    write_cache(tmp_path / "c", SOURCES)
    with pytest.raises(CacheError, match="schema fingerprint"):
        DataLoader(tmp_path / "c", schema_fingerprint="nope")
    m = write_cache(tmp_path / "d", SOURCES)
    p = tmp_path / "d" / m["shards"][3]["path"]
    p.write_bytes(p.read_bytes()[:100])
    for workers in (2, 0):  # from a worker process; from the planning thread
        with pytest.raises(CacheError, match=r"truncated.*shard 3 .*run1\.root entries 192-256"):
            list(DataLoader(tmp_path / "d", batch_size=32, num_workers=workers))
    with pytest.raises(ValueError, match="even_split"):
        DataLoader(tmp_path / "c", even_split="sometimes")
    with pytest.raises(ValueError, match="fractions"):
        DataLoader(tmp_path / "c", split="train", fractions=(0.5, 0.1, 0.1))


def test_rank_from_torch_distributed(cache, monkeypatch):
    path, _ = cache
    dist = torch.distributed
    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ld = DataLoader(path, batch_size=16)
    assert (ld.dataset.rank, ld.dataset.world_size) == (1, 3)
    assert any("even_split" in str(w.message) for w in caught)
    ld = DataLoader(path, batch_size=16, even_split=True, rank=0, world_size=2)
    assert (ld.dataset.rank, ld.dataset.world_size, ld.dataset.even_split) == (0, 2, "drop")


def shuffle_quality(rows: list[tuple[str, int]], order: list[tuple[str, int]]) -> float:
    """Mean |source index distance| of consecutive events over that of a perfect shuffle."""
    index = {r: i for i, r in enumerate(sorted(rows))}
    idx = np.array([index[r] for r in order], dtype=np.float64)
    n = len(idx)
    return float(np.abs(np.diff(idx)).mean() / ((n + 1) / 3))


def test_shuffle_quality(tmp_path, capsys):
    sources = [(f"f{i}.root", 2500) for i in range(8)]
    m = write_cache(tmp_path, sources, shard_entries=1000)
    names = [n for n, _ in sources]
    rows = expected_rows(m)
    figures = {}
    for buffer in (0, 1000, 5000):
        ld = DataLoader(tmp_path, batch_size=256, shuffle=True, seed=0, shuffle_buffer=buffer,
                        columns=["_entry", "run"])  # fmt: skip
        order = [
            (names[r], e)
            for b in ld
            for r, e in zip(b["run"].tolist(), b["_entry"].tolist(), strict=True)
        ]
        figures[buffer] = shuffle_quality(rows, order)
    ordered = shuffle_quality(rows, sorted(rows))
    with capsys.disabled():
        print(
            f"\nshuffle quality (1 = perfect shuffle, {len(rows)} events, shards of ~860): "
            f"no shuffle {ordered:.4f}, "
            + ", ".join(f"buffer {k}: {v:.3f}" for k, v in figures.items())
        )
    assert ordered < 0.001
    assert figures[0] > 0.04 and figures[5000] > figures[1000] > figures[0]


def test_window_shuffle_is_chunking_independent():
    def run(chunks):
        w = WindowShuffle(100, epoch_rng(1, 2, 3))
        out = [w.push(c) for c in chunks] + [w.flush()]
        return np.concatenate(out)

    a, b = run([1000]), run([7, 300, 1, 692])
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(1000))
    assert np.abs(a - np.arange(1000)).max() <= 100
    cut = BatchCutter(64, drop_last=False, buffer=100, rng=epoch_rng(1, 2, 3))
    batches = [*cut.feed(500), *cut.feed(500), *cut.finish()]
    assert np.array_equal(np.concatenate([p for _, p, _ in batches]), a)
    for j, (_, _, low) in enumerate(batches[:-1]):
        assert low <= min(p.min() for _, p, _ in batches[j + 1 :])


class FakeTables:
    """A picklable table source: the synthetic cache's shards, split between consumers."""

    def __init__(self, path):
        from rntensor.cache.read import open_cache

        self.reader = open_cache(path)

    def __call__(self, part, num_parts, epoch):
        for i in range(part, len(self.reader.shards), num_parts):
            yield self.reader.read_shard(i), self.reader.shards[i]["source"]["name"]


def test_stream_dataset_from_tables(cache):
    path, manifest = cache
    src = FakeTables(path)
    cols = src.reader.columns
    want = split_of(expected_rows(manifest), "train")
    got = []
    for rank in range(2):
        ld = DataLoader.from_root(
            [], cols, tables=src, stats=src.reader.stats, batch_size=16, shuffle=True, seed=1,
            shuffle_buffer=30, split="train", rank=rank, world_size=2, keep=True,
        )  # fmt: skip
        assert isinstance(ld.dataset, StreamDataset)
        got += rows_of(ld)
    assert sorted(got) == sorted(want)
    # shared collation: same batch contents as the cache path without shuffling
    a = list(
        DataLoader.from_root([], cols, tables=src, stats=src.reader.stats, batch_size=40, keep=True)
    )
    b = list(DataLoader(path, batch_size=40, keep=True))
    for x, y in zip(a, b, strict=True):
        x.pop("_shard"), y.pop("_shard")
    assert_same_batches(a, b)
    with pytest.raises(CacheError, match="no statistics"):
        DataLoader.from_root([], cols, tables=src)


def test_device_prefetcher_cpu_passthrough(cache):
    path, _ = cache
    ld = DataLoader(path, batch_size=16, device="cpu", ragged="offsets")
    batches = list(ld)
    assert all(t.device.type == "cpu" for b in batches for t in b.values())
    src = [{"x": torch.arange(3)}]
    assert list(DevicePrefetcher(src, "cpu")) == src


@pytest.mark.gpu
@pytest.mark.gpu  # deselected by default (pyproject addopts); run with `pytest -m gpu` on a GPU
def test_device_prefetcher_cuda(cache):
    path, _ = cache
    cpu = list(DataLoader(path, batch_size=16, shuffle=True, seed=1, keep=True, ragged="offsets"))
    ld = DataLoader(path, batch_size=16, shuffle=True, seed=1, keep=True, device="cuda",
                    num_workers=2)  # fmt: skip
    assert ld.pin_memory
    got = list(ld)
    assert all(t.is_cuda for b in got for t in b.values())
    for g, c in zip(got, cpu, strict=True):
        mu = g.pop("muons")
        assert torch.equal(mu.values().cpu(), c.pop("muons"))
        assert torch.equal(mu.offsets().cpu(), c.pop("muons_offsets"))
        assert all(torch.equal(g[k].cpu(), c[k]) for k in c)


def test_real_conversion_cache_and_from_root(small_dataset, tmp_path):
    """A cache written by ``rntensor convert`` loads, and streaming the same ROOT files through
    ``DataLoader.from_root`` gives the same rows, values and splits."""
    from rntensor.cache.read import open_cache
    from rntensor.convert import convert
    from rntensor.demo import DEMO_SCHEMA

    convert(
        DEMO_SCHEMA, small_dataset.paths, str(tmp_path / "c"), scheduler="synchronous",
        shard_size="60 kB", progress=False,
    )  # fmt: skip
    reader = open_cache(tmp_path / "c", verify="checksum")
    reader.verify_shards()
    assert len(reader.shards) > 3

    def by_row(batches):
        out = {}
        for b in batches:
            ids = zip(b["run"].tolist(), b["event"].tolist(), b["_entry"].tolist(), strict=True)
            for i, key in enumerate(ids):
                out[key] = (b["jets"][i], b["scalars"][i], b["muons"][i], int(b["target"][i]))
        return out

    kw = dict(batch_size=100, keep=True, ragged="nested")
    cached = by_row(DataLoader(tmp_path / "c", shuffle=True, seed=3, shuffle_buffer=300, **kw))
    streamed = by_row(
        DataLoader.from_root(
            small_dataset.paths, DEMO_SCHEMA, stats=reader.stats, step_size="60 kB", **kw
        )
    )
    assert len(cached) == reader.num_rows and cached.keys() == streamed.keys()
    for key, (jets, scalars, muons, target) in cached.items():
        s = streamed[key]
        assert torch.equal(jets, s[0]) and torch.equal(scalars, s[1]) and torch.equal(muons, s[2])
        assert target == s[3]
    for split in SPLITS:
        cols = ["run", "event", "_entry"]
        a = DataLoader(tmp_path / "c", batch_size=500, split=split, columns=cols)
        b = DataLoader.from_root(
            small_dataset.paths, DEMO_SCHEMA, stats=reader.stats, batch_size=500, split=split,
            columns=cols, step_size="60 kB",
        )  # fmt: skip
        rows_a = sorted(zip(*(torch.cat([x[c] for x in a]).tolist() for c in cols), strict=True))
        rows_b = sorted(zip(*(torch.cat([x[c] for x in b]).tolist() for c in cols), strict=True))
        assert rows_a == rows_b and len(set(rows_a)) == len(rows_a) > 0


def test_remote_cache_with_forked_workers(cache, tmp_path):
    """A remote cache read through the local folder, by worker processes forked from a parent
    whose reader already runs prefetch threads: same batches as the local cache."""
    from rntensor.cache.read import open_cache

    path, _ = cache
    reader = open_cache(copy_to_memory(path, "/bucket/loader"), local_cache=tmp_path / "l")
    reader.prefetch([0, 1])
    kw = dict(batch_size=32, shuffle=True, seed=9, shuffle_buffer=64, keep=True, ragged="offsets")
    remote = DataLoader(reader, num_workers=2, multiprocessing_context="fork", **kw)
    assert_same_batches(list(remote), list(DataLoader(path, **kw)))
    assert len(list((tmp_path / "l").glob("*.arrow"))) == len(reader.shards)


def test_state_refused_for_another_cache(cache, tmp_path):
    path, _ = cache
    state = DataLoader(path, batch_size=16).state_dict()
    write_cache(tmp_path, SOURCES[:2])
    with pytest.raises(ValueError, match="split_rows"):
        DataLoader(tmp_path, batch_size=16).load_state_dict(state)
    with pytest.raises(ValueError, match="fractions"):
        DataLoader(path, batch_size=16, fractions=(0.7, 0.2, 0.1)).load_state_dict(state)


def test_batches_kept_by_the_consumer_are_never_reused(cache):
    """Chunk buffers are reused once their batches are gone, never while one is referenced
    (a tensor, a numpy view of it, a slice)."""
    path, _ = cache
    ld = DataLoader(path, batch_size=16, shuffle=True, seed=3, chunk_batches=2, keep=True)
    kept, copies = {}, {}
    for i, b in enumerate(ld):
        if i % 3 == 0:
            kept[i] = {"t": b["_entry"], "np": b["jets"].numpy(), "slice": b["scalars"][1:]}
            copies[i] = {k: v.numpy().copy() if hasattr(v, "numpy") else v.copy()
                         for k, v in kept[i].items()}  # fmt: skip
    assert len(kept) > 5
    for i, refs in kept.items():
        for k, v in refs.items():
            np.testing.assert_array_equal(np.asarray(v), copies[i][k])


@pytest.mark.parametrize(("normalize", "workers"), [(False, 0), (True, 0), (True, 2)])
def test_masks_off_leaves_masks_out_and_values_alone(cache, normalize, workers):
    """``masks=False``: no ``*_mask`` keys, the same values (normalization still uses the
    masks to keep padded slots at the pad value); a mask named in ``columns`` still comes."""
    path, _ = cache
    kw = dict(batch_size=32, shuffle=True, seed=5, normalize=normalize, ragged="offsets")
    with_masks = list(DataLoader(path, **kw))
    without = DataLoader(path, masks=False, num_workers=workers, **kw)
    assert "jets_mask" not in without.columns
    got = list(without)
    assert len(got) == len(with_masks)
    for a, b in zip(with_masks, got, strict=True):
        assert set(a) - set(b) == {"jets_mask"}
        for k in b:
            assert torch.equal(a[k], b[k]), k
    named = next(iter(DataLoader(path, masks=False, columns=["jets", "jets_mask"], batch_size=8)))
    assert set(named) == {"jets", "jets_mask"}


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 3000),
    batch=st.integers(1, 70),
    drop_last=st.booleans(),
    buffer=st.sampled_from([0, 1, 50, 2048, 5000]),
    chunk=st.integers(1, 5),
    start=st.integers(0, 40),
    workers=st.integers(1, 3),
    piece=st.integers(1, 800),
    first=st.integers(1, 800),
    data=st.data(),
)
def test_chunk_pieces_is_the_batch_cutter_order(
    n, batch, drop_last, buffer, chunk, start, workers, piece, first, data
):
    """The vectorized planner yields exactly the chunks of BatchCutter + Chunker, whatever
    the piece sizes."""
    worker = data.draw(st.integers(0, workers - 1))

    def rng():
        return epoch_rng(1, 2, 3) if buffer else None

    chunker = Chunker(chunk, start=start, worker=worker, workers=workers)
    old = []
    for b, pos, _ in batch_positions(n, batch, drop_last=drop_last, buffer=buffer, rng=rng()):
        done = chunker.add(b, pos)
        if done is not None:
            old.append(done)
    if (last := chunker.finish()) is not None:
        old.append(last)
    pieces = chunk_pieces(
        n, batch, drop_last=drop_last, buffer=buffer, rng=rng(), chunk=chunk, start=start,
        worker=worker, workers=workers, piece=piece, first_piece=first,
    )  # fmt: skip
    new = [(pc.pos[a:b], sizes) for pc in pieces for a, b, sizes in pc.chunks]
    assert len(new) == len(old)
    for (pos, sizes), batches in zip(new, old, strict=True):
        assert sizes == [len(x) for x in batches]
        assert np.array_equal(pos, np.concatenate(batches))


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 20000),
    buffer=st.sampled_from([100, 2048, 5000, 65536]),
    block=st.sampled_from([None, 1, 3, 64]),
    cuts=st.lists(st.floats(0, 1), max_size=6),
)
def test_window_shuffle_blocks(n, buffer, block, cuts):
    """Blocks move less than the buffer, the order does not depend on how positions are
    pushed, and the low water never passes a position emitted later."""

    def run(sizes):
        w = WindowShuffle(buffer, epoch_rng(4, 5, 6), block)
        out, lows = [], []
        for c in sizes:
            out.append(w.push(c))
            lows.append((w.low_water, sum(len(x) for x in out)))
        out.append(w.flush())
        return np.concatenate(out), lows

    edges = sorted({0, n, *(int(c * n) for c in cuts)})
    whole, _ = run([n])
    parts, lows = run(np.diff(edges).tolist())
    assert np.array_equal(whole, parts)
    assert sorted(whole.tolist()) == list(range(n))
    g = max(1, min(64, buffer // 1024)) if block is None else block
    if n:
        assert np.abs(whole - np.arange(n)).max() < buffer + g
    for low, k in lows:
        assert k == n or whole[k:].min() >= low


def test_in_turn_keeps_order_and_raises_in_order():
    from rntensor.torch.collate import Helpers, in_turn

    helpers = Helpers(1)
    try:
        jobs = [lambda i=i: i for i in range(11)]
        assert list(in_turn(jobs, helpers)) == list(range(11))  # type: ignore[arg-type]

        def boom():
            raise CacheError("bad shard")

        got = []
        with pytest.raises(CacheError, match="bad shard"):
            for x in in_turn([jobs[0], jobs[1], boom, jobs[3]], helpers):  # type: ignore[list-item]
                got.append(x)
        assert got == [0, 1]
    finally:
        helpers.close()


def test_persistent_workers_follow_epochs_resume_and_close(cache):
    """Persistent workers get each epoch's order (and a resume point) through shared memory:
    the batches equal fresh workers'; a break mid-epoch does not disturb the next epoch;
    close() stops them."""
    import multiprocessing

    path, _ = cache
    kw = dict(batch_size=16, shuffle=True, seed=7, num_workers=2, keep=True, ragged="offsets")
    before = set(multiprocessing.active_children())  # session fixtures' servers, clusters

    def mine():
        return set(multiprocessing.active_children()) - before

    def run(ld, epoch):
        ld.set_epoch(epoch)
        return [{k: v.numpy().copy() for k, v in b.items()} for b in ld]

    fresh = DataLoader(path, **kw)
    with DataLoader(path, persistent_workers=True, **kw) as kept:
        for epoch in (0, 1, 2):
            assert_same_batches(run(kept, epoch), run(fresh, epoch))
            assert len(mine()) == 2  # still there between epochs
        kept.set_epoch(3)
        for i, _ in enumerate(kept):
            if i == 2:
                state = kept.state_dict()
                break
        assert_same_batches(run(kept, 4), run(fresh, 4))
        resumed = DataLoader(path, persistent_workers=True, **kw)
        resumed.load_state_dict(state)
        fresh.set_epoch(3)
        rest = [{k: v.numpy().copy() for k, v in b.items()} for b in resumed]
        assert_same_batches(rest, run(fresh, 3)[3:])
        resumed.close()
    assert not mine()
