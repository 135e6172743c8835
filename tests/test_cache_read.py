"""rntensor.cache.read: manifest checks, shard decoding, read-through cache for remote stores."""

from __future__ import annotations

import json
import os
import shutil

import fsspec
import numpy as np
import pytest
from _cache_factory import FINGERPRINT, copy_to_memory, write_cache
from _contracts import assert_pickle_roundtrip

from rntensor.cache.read import CacheReader, open_cache
from rntensor.cache.readthrough import ReadThroughCache
from rntensor.errors import CacheError, SchemaError


@pytest.fixture
def cache(tmp_path):
    dest = tmp_path / "cache"
    manifest = write_cache(dest)
    return str(dest), manifest


@pytest.mark.parametrize("compression", [None, "lz4", "zstd"], ids=["plain", "lz4", "zstd"])
def test_read_shard_layout(tmp_path, compression):
    dest = tmp_path / "c"
    manifest = write_cache(dest, compression=compression)
    r = open_cache(dest, schema_fingerprint=FINGERPRINT, verify="checksum")
    assert r.num_rows == manifest["num_rows"] == sum(s["rows"] for s in r.shards)
    assert r.columns == manifest["columns"] and r.stats == manifest["stats"]
    s = r.read_shard(1)
    n = r.shards[1]["rows"]
    assert s["jets"].shape == (n, 10, 5) and s["jets"].dtype == np.float32
    assert s["jets_mask"].shape == (n, 10) and s["jets_mask"].dtype == np.bool_
    assert s["scalars"].shape == (n, 3)
    assert s["target"].shape == s["weight"].shape == s["_entry"].shape == (n,)
    off = s["muons_offsets"]
    assert off.dtype == np.int64 and off.shape == (n + 1,) and off[0] == 0
    assert s["muons"].shape == (off[-1], 3)
    # values encode their row (see _cache_factory)
    e = s["_entry"]
    assert np.array_equal(s["scalars"][:, 0], e)
    assert np.array_equal(np.diff(off), e % 4)
    assert np.array_equal(s["muons"][:, 0], np.repeat(e, e % 4))
    assert np.array_equal(s["jets"][:, 0, 0][s["jets_mask"][:, 0]], e[s["jets_mask"][:, 0]])
    if compression is None:  # zero-copy views of the memory map
        for k in ("jets", "jets_mask", "scalars", "muons", "_entry"):
            assert not s[k].flags.writeable and not s[k].flags.owndata, k


def test_read_columns_subset_and_unknown(cache):
    path, _ = cache
    r = open_cache(path)
    s = r.read_shard(0, ["muons", "_entry"])
    assert set(s) == {"muons", "muons_offsets", "_entry"}
    with pytest.raises(SchemaError, match="did you mean 'jets'"):
        r.read_shard(0, ["jet"])
    assert np.array_equal(r.peek_column(2, "_entry"), r.read_shard(2)["_entry"])


def test_pickle_roundtrip(cache):
    path, _ = cache
    r = open_cache(path)
    r.read_shard(0)
    r.prefetch([1, 2])

    def same(a: CacheReader, b: CacheReader) -> None:
        assert b.manifest == a.manifest
        for k, v in a.read_shard(3).items():
            assert np.array_equal(v, b.read_shard(3)[k])

    assert_pickle_roundtrip(r, same)
    r.close()


def test_schema_fingerprint_object(cache):
    path, _ = cache

    class Schema:
        def fingerprint(self) -> str:
            return FINGERPRINT

    assert open_cache(path, schema_fingerprint=Schema()).num_rows > 0


def test_missing_manifest(tmp_path):
    with pytest.raises(CacheError, match=r"no manifest\.json .*rntensor convert"):
        open_cache(tmp_path)
    with pytest.raises(CacheError, match="no such folder"):
        open_cache(tmp_path / "nope")


def test_bad_manifest_json(cache):
    path, _ = cache
    with open(os.path.join(path, "manifest.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(CacheError, match=r"not valid JSON.*rntensor convert"):
        open_cache(path)


def test_wrong_format_version(tmp_path):
    write_cache(tmp_path, format_version=99)
    with pytest.raises(
        CacheError, match=r"format_version 99.*reads format_version 1.*rntensor convert"
    ):
        open_cache(tmp_path)


def test_schema_mismatch(cache):
    path, _ = cache
    with pytest.raises(
        CacheError, match=r"schema fingerprint .*expected 'other'.*re-run `rntensor convert`"
    ):
        open_cache(path, schema_fingerprint="other")


def test_truncated_shard(cache):
    path, manifest = cache
    shard = os.path.join(path, manifest["shards"][2]["path"])
    with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    r = open_cache(path)
    r.read_shard(1)
    with pytest.raises(CacheError, match=r"truncated.*rntensor convert") as info:
        r.read_shard(2)
    assert "shard 2" in str(info.value) and "run1.root entries 128-192" in str(info.value)
    # without the size check the Arrow reader still refuses it
    with pytest.raises(CacheError, match="corrupt or truncated"):
        open_cache(path, verify="none").read_shard(2)


def test_missing_and_corrupt_shard(cache):
    path, manifest = cache
    os.unlink(os.path.join(path, manifest["shards"][0]["path"]))
    with pytest.raises(CacheError, match=r"missing.*rntensor convert"):
        open_cache(path).read_shard(0)
    shard = os.path.join(path, manifest["shards"][1]["path"])
    with open(shard, "r+b") as f:  # same size, different bytes
        f.seek(os.path.getsize(shard) // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))
    open_cache(path).read_shard(1)  # size only: not detected (cheap default)
    with pytest.raises(CacheError, match="checksum"):
        open_cache(path, verify="checksum").read_shard(1)
    with pytest.raises(CacheError, match="checksum"):
        open_cache(path).verify_shards([1])


def test_remote_read_through_lru(cache, tmp_path):
    path, manifest = cache
    url = copy_to_memory(path, "/bucket/lru")
    sizes = [s["bytes"] for s in manifest["shards"]]
    local = tmp_path / "local"
    r = open_cache(url, local_cache=local, local_cache_bytes=int(max(sizes) * 2.5))
    ref = open_cache(path)
    assert r.remote and r.num_rows == ref.num_rows
    # split computation reads one column by ranged requests, without downloading
    assert np.array_equal(r.peek_column(0, "_entry"), ref.peek_column(0, "_entry"))
    assert not local.exists() or not list(local.glob("*.arrow"))
    for i in range(5):
        got = r.read_shard(i)
        for k, v in ref.read_shard(i).items():
            assert np.array_equal(got[k], v)
    kept = sorted(p.name for p in local.glob("*.arrow"))
    assert len(kept) == 2  # the limit holds two shards: the least recently used went
    assert kept == sorted(f"{manifest['shards'][i]['key']}.arrow" for i in (3, 4))
    for f in r.prefetch([5, 6]):
        assert os.path.exists(f.result())
    r.close()
    assert (local / f"{manifest['shards'][6]['key']}.arrow").exists()
    assert_pickle_roundtrip(r, lambda a, b: b.read_shard(7))


def test_remote_corrupt_download(cache, tmp_path):
    path, manifest = cache
    url = copy_to_memory(path, "/bucket/bad")
    fs = fsspec.filesystem("memory")
    rel = manifest["shards"][0]["path"]
    data = bytearray(fs.cat_file(f"/bucket/bad/{rel}"))
    data[100] ^= 0xFF
    fs.pipe_file(f"/bucket/bad/{rel}", bytes(data))
    fs.rm(f"/bucket/bad/{manifest['shards'][1]['path']}")
    r = open_cache(url, local_cache=tmp_path / "l")
    with pytest.raises(CacheError, match=r"corrupt or truncated.*checksum"):
        r.read_shard(0)
    with pytest.raises(CacheError, match="missing from the store"):
        r.read_shard(1)
    assert not list((tmp_path / "l").glob("*.arrow")) and not list(
        (tmp_path / "l").glob(".*.tmp-*")
    )
    with pytest.raises(CacheError, match=r"no manifest\.json"):
        open_cache("memory://bucket/none")


def test_readthrough_eviction_keeps_newest(tmp_path):
    store = ReadThroughCache(str(tmp_path), capacity_bytes=250)
    for i in range(4):
        p = tmp_path / f"k{i}.arrow"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
    assert store.size_bytes() == 400
    assert store.evict(keep={str(tmp_path / "k0.arrow")}) == 200
    assert sorted(p.name for p in tmp_path.glob("*.arrow")) == ["k0.arrow", "k3.arrow"]


def test_manifest_shard_order_does_not_matter(tmp_path):
    a = write_cache(tmp_path / "a")
    n = len(a["shards"])
    write_cache(tmp_path / "b", shard_order=list(reversed(range(n))))
    ra, rb = open_cache(tmp_path / "a"), open_cache(tmp_path / "b")
    assert ra.num_rows == rb.num_rows
    assert np.array_equal(ra.read_shard(0)["jets"], rb.read_shard(n - 1)["jets"])
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(CacheError):
        ra.read_shard(0)
    json.dumps(rb.manifest)  # stays plain JSON
