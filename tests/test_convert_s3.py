"""Conversion with a real object store (SeaweedFS on loopback): ROOT files read from S3, shards
written straight to S3 by Dask worker processes, the cache read back from S3."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rntensor.cache.read import open_cache
from rntensor.convert import convert
from rntensor.errors import RNTensorError

pytestmark = pytest.mark.s3

SCHEMA = {
    "name": "s3-jets",
    "define": {"ht": "sum(Jet_pt)"},
    "outputs": {
        "jets": {"fields": ["Jet_pt", "Jet_eta"], "length": 5, "sort_by": "-Jet_pt"},
        "scalars": {"fields": ["MET_pt", "ht"]},
    },
    "labels": {"target": {"field": "label", "classes": 2}},
    "keep": ["event"],
}

FILES = ["root_rntuple_zstd.root", "root_ttree_lz4.root"]


def _rows(reader) -> dict[str, np.ndarray]:
    parts = [reader.read_shard(i) for i in range(len(reader.shards))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_s3_to_s3_on_distributed(seaweed, s3_root_files, s3_bucket, dask_client, tmp_path):
    inputs = [s3_root_files[f] for f in FILES]
    dest = f"s3://{s3_bucket}/cache/jets"
    opts = seaweed.storage_options
    res = convert(
        SCHEMA,
        inputs,
        dest,
        storage_options=opts,
        scheduler=dask_client,
        shard_size="60 kB",
        progress=False,
    )
    assert res.shards_written == res.shards_total > 2
    local = str(tmp_path / "local")
    convert(
        SCHEMA,
        [str(p) for p in _local(FILES)],
        local,
        scheduler="synchronous",
        shard_size="60 kB",
        progress=False,
    )
    remote = open_cache(dest, storage_options=opts, local_cache=str(tmp_path / "rt"))
    a, b = _rows(remote), _rows(open_cache(local))
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    manifest = seaweed.filesystem().cat_file(f"{s3_bucket}/cache/jets/manifest.json").decode()
    assert seaweed.secret not in manifest and seaweed.key not in manifest
    assert json.loads(manifest)["shards"][0]["source"]["fingerprint"]["etag"]
    again = convert(
        SCHEMA,
        inputs,
        dest,
        storage_options=opts,
        scheduler="threads",
        shard_size="60 kB",
        progress=False,
    )
    assert again.shards_written == 0


def test_env_credentials_only(seaweed_env, s3_root_files, s3_bucket, tmp_path):
    dest = f"s3://{s3_bucket}/c"
    res = convert(SCHEMA, [s3_root_files[FILES[0]]], dest, scheduler="threads", progress=False)
    assert res.num_rows > 0


def test_s3_glob_input(seaweed, s3_root_files, s3_bucket, tmp_path):
    pattern = s3_root_files[FILES[0]].rsplit("/", 1)[0] + "/root_rntuple_*.root"
    res = convert(
        SCHEMA,
        [pattern],
        str(tmp_path / "c"),
        storage_options=seaweed.storage_options,
        scheduler="threads",
        progress=False,
    )
    assert len({s["source"]["name"] for s in open_cache(str(tmp_path / "c")).shards}) == 4
    assert res.num_rows > 0


def test_wrong_secret_is_one_line_without_secret(seaweed, s3_root_files, tmp_path):
    opts = {**seaweed.storage_options, "secret": "not-the-secret-XYZ123"}
    with pytest.raises(RNTensorError) as info:
        convert(
            SCHEMA,
            [s3_root_files[FILES[0]]],
            str(tmp_path / "c"),
            storage_options=opts,
            scheduler="synchronous",
            progress=False,
        )
    msg = str(info.value)
    assert "not-the-secret-XYZ123" not in msg and seaweed.secret not in msg
    assert "\n" not in msg and FILES[0] in msg


def _local(names):
    from pathlib import Path

    data = Path(__file__).parent / "data"
    return [data / n for n in names]
