"""rntensor.sources over S3: the same answers as the local files, clear errors, no leaked secret."""

from __future__ import annotations

import hashlib
import os
import pickle
import traceback
from pathlib import Path

import numpy as np
import pytest

from rntensor.errors import RNTensorError, SourceError, StorageError
from rntensor.sources import Jagged, Source, expand_inputs, open_source
from rntensor.testing import LOOPBACK, LatencyProxy, free_port

pytestmark = pytest.mark.s3

DATA = Path(__file__).parent / "data"
NAMES = sorted(p.name for p in DATA.glob("*.root")) or [
    "generated_ttree.root",
    "generated_rntuple.root",
]
FAST_FAIL = {"config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}


def _assert_same(a, b):
    if isinstance(a, Jagged):
        assert isinstance(b, Jagged)
        np.testing.assert_array_equal(a.offsets, b.offsets)
        np.testing.assert_array_equal(a.content, b.content)
    else:
        np.testing.assert_array_equal(a, b)


def _some_fields(src: Source, n: int = 4) -> list[str]:
    """A few readable fields, jagged ones included."""
    ok = [f for f in src.fields.values() if f.supported]
    picked = [f for f in ok if f.jagged][: n // 2]
    picked += [f for f in ok if not f.jagged][: n - len(picked)]
    return [f.path for f in picked]


def _assert_same_source(remote: Source, local: Source) -> None:
    try:
        local_fields = local.fields
    except RNTensorError as err:  # a deliberately broken fixture: same error class remotely
        with pytest.raises(type(err)):
            _ = remote.fields
        return
    assert (remote.tree, remote.kind, remote.num_entries) == (
        local.tree,
        local.kind,
        local.num_entries,
    )
    assert remote.fields == local_fields
    starts = remote.cluster_starts()
    assert starts == local.cluster_starts()
    paths = _some_fields(local)
    lo, hi = starts[1] if len(starts) > 2 else 0, starts[-1] - 7  # a sub-range off the clusters
    lo += 3
    got, want = remote.read(paths, lo, hi), local.read(paths, lo, hi)
    assert list(got) == paths
    for p in paths:
        _assert_same(got[p], want[p])


def _leaks(err: BaseException, secret: str) -> bool:
    text = "".join(traceback.format_exception(err))
    return secret in text or secret in str(err) or secret in repr(err)


# -- reading ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_seaweed_reads_like_local(seaweed, s3_root_files, root_files_local, name):
    remote = open_source(f"{s3_root_files[name]}:Events", storage_options=seaweed.storage_options)
    _assert_same_source(remote, open_source(f"{root_files_local[name]}:Events"))
    remote.close()


ONE_PER_FORMAT = [n for n in NAMES if "ttree" in n][:1] + [n for n in NAMES if "rntuple" in n][:1]


@pytest.mark.parametrize("name", ONE_PER_FORMAT)
def test_moto_reads_like_local(moto_s3, root_files_local, name):
    moto_s3.make_bucket("moto-data")
    url = moto_s3.upload(root_files_local[name], "s3://moto-data/in/")
    remote = open_source(url, storage_options=moto_s3.storage_options)
    _assert_same_source(remote, open_source(str(root_files_local[name])))


def test_endpoint_from_environment_alone(seaweed_env, s3_root_files, root_files_local):
    name = NAMES[0]
    remote = open_source(s3_root_files[name])  # no storage_options: AWS_* variables only
    _assert_same_source(remote, open_source(str(root_files_local[name])))
    assert remote.fingerprint()["size"] == root_files_local[name].stat().st_size
    prefix = s3_root_files[name].rsplit("/", 1)[0]
    assert expand_inputs([prefix]) == sorted(s3_root_files.values())


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_reads_survive_injected_faults(seaweed, s3_root_files, root_files_local, mode):
    name = NAMES[0]
    proxy = LatencyProxy.from_url(
        seaweed.endpoint_url, latency_s=0.0, fail_every=15, fail_mode=mode
    )
    with proxy:
        opts = {**seaweed.storage_options, "endpoint_url": proxy.endpoint_url}
        remote = open_source(s3_root_files[name], storage_options=opts)
        _assert_same_source(remote, open_source(str(root_files_local[name])))
        remote.close()
        assert proxy.faults >= 1


# -- listing and fingerprints -------------------------------------------------------------


def test_expand_prefix(seaweed, s3_root_files):
    opts = seaweed.storage_options
    prefix = "s3://rntensor-fixtures/data"
    want = sorted(s3_root_files.values())
    assert expand_inputs([prefix], storage_options=opts) == want
    assert expand_inputs([prefix + "/"], storage_options=opts) == want
    assert expand_inputs(["s3://rntensor-fixtures"], storage_options=opts) == want
    tree = expand_inputs([prefix + "/" + NAMES[0] + ":Events"], storage_options=opts)
    assert tree == [s3_root_files[NAMES[0]] + ":Events"]


def test_expand_glob(seaweed, s3_root_files):
    opts = seaweed.storage_options
    kind = "ttree" if any("ttree" in n for n in NAMES) else NAMES[0][:4]
    want = sorted(u + ":Events" for n, u in s3_root_files.items() if kind in n)
    got = expand_inputs([f"s3://rntensor-fixtures/data/*{kind}*.root:Events"], storage_options=opts)
    assert got == want and got


def test_expand_sees_new_files(seaweed, s3_bucket, root_files_local):
    opts, path = seaweed.storage_options, root_files_local[NAMES[0]]
    for spec in [f"s3://{s3_bucket}/*.root", f"s3://{s3_bucket}"]:  # glob: cached listings
        fs = seaweed.filesystem()
        for old in fs.glob(f"{s3_bucket}/*.root"):
            fs.rm(old)
        seaweed.upload(path, f"s3://{s3_bucket}/a.root")
        assert expand_inputs([spec], storage_options=opts) == [f"s3://{s3_bucket}/a.root"]
        seaweed.upload(path, f"s3://{s3_bucket}/b.root")
        assert len(expand_inputs([spec], storage_options=opts)) == 2


def test_expand_nothing_is_a_source_error(seaweed, s3_bucket):
    opts = seaweed.storage_options
    for spec in [f"s3://{s3_bucket}/none/*.root", f"s3://{s3_bucket}/none.root"]:
        with pytest.raises(SourceError, match="no ROOT files") as info:
            expand_inputs([spec], storage_options=opts)
        assert not isinstance(info.value, StorageError)


def test_fingerprint_has_etag_and_size(seaweed, s3_root_files, root_files_local):
    name = NAMES[0]
    fp = open_source(s3_root_files[name], storage_options=seaweed.storage_options).fingerprint()
    content = root_files_local[name].read_bytes()
    assert fp["size"] == len(content)
    assert fp["etag"] == hashlib.md5(content).hexdigest()  # single-part upload


def test_fingerprint_follows_a_replaced_object(seaweed, s3_bucket, root_files_local):
    opts, url = seaweed.storage_options, f"s3://{s3_bucket}/x.root"
    seaweed.upload(root_files_local[NAMES[0]], url)
    expand_inputs([f"s3://{s3_bucket}/*.root"], storage_options=opts)  # a glob fills s3fs's cache
    before = open_source(url, storage_options=opts).fingerprint()
    seaweed.upload(root_files_local[NAMES[-1]], url)
    after = open_source(url, storage_options=opts).fingerprint()
    assert after["etag"] != before["etag"]
    assert after["size"] == root_files_local[NAMES[-1]].stat().st_size


# -- errors ---------------------------------------------------------------------------------


def test_missing_key_names_the_url(seaweed, s3_bucket):
    url = f"s3://{s3_bucket}/missing/run1.root"
    src = open_source(url + ":Events", storage_options=seaweed.storage_options)
    with pytest.raises(SourceError, match="not found") as info:
        _ = src.num_entries
    assert url in str(info.value)
    with pytest.raises(SourceError, match="not found") as info:
        src.fingerprint()
    assert url in str(info.value)


def test_missing_bucket_names_the_url(seaweed):
    url = "s3://no-such-bucket-rntensor/run1.root"
    with pytest.raises(SourceError) as info:
        _ = open_source(url, storage_options=seaweed.storage_options).num_entries
    assert url in str(info.value)


def test_wrong_credentials_never_leak_the_secret(seaweed, s3_root_files):
    secret = "wrong-" + seaweed.secret[::-1]
    opts = {**seaweed.storage_options, "secret": secret}
    url = s3_root_files[NAMES[0]]
    calls = [
        lambda: open_source(url, storage_options=opts).num_entries,
        lambda: open_source(url, storage_options=opts).fingerprint(),
        lambda: expand_inputs([url], storage_options=opts),
        lambda: expand_inputs(["s3://rntensor-fixtures/data/"], storage_options=opts),
    ]
    for call in calls:
        with pytest.raises(StorageError) as info:
            call()
        assert not _leaks(info.value, secret)
        assert not _leaks(info.value, seaweed.secret)
        assert "s3://rntensor-fixtures" in str(info.value)


def test_unreachable_endpoint_is_a_storage_error(seaweed):
    opts = {
        **seaweed.storage_options,
        **FAST_FAIL,
        "endpoint_url": f"http://{LOOPBACK}:{free_port()}",  # nothing listens there
    }
    url = "s3://rntensor-fixtures/data/" + NAMES[0]
    calls = [
        lambda: open_source(url, storage_options=opts).num_entries,
        lambda: open_source(url, storage_options=opts).fingerprint(),
        lambda: expand_inputs(["s3://rntensor-fixtures/data"], storage_options=opts),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="s3://rntensor-fixtures") as info:
            call()
        assert not _leaks(info.value, seaweed.secret)


def test_bad_storage_option_is_named(seaweed):
    opts = {**seaweed.storage_options, "no_such_option": 1}
    with pytest.raises(SourceError, match="storage_options") as info:
        _ = open_source("s3://rntensor-fixtures/x.root", storage_options=opts).num_entries
    assert not _leaks(info.value, seaweed.secret)


# -- Dask -----------------------------------------------------------------------------------


def _read_in_worker(payload: bytes) -> tuple[int, int, dict]:
    src = pickle.loads(payload)
    paths = _some_fields(src)
    return os.getpid(), src.num_entries, src.read(paths, 10, 500)


def test_source_travels_to_dask_worker_processes(
    dask_client, seaweed, s3_root_files, root_files_local
):
    name = NAMES[0]
    remote = open_source(s3_root_files[name], storage_options=seaweed.storage_options)
    _ = remote.num_entries  # opened here: the open handle must not travel
    payload = pickle.dumps(remote)
    futures = [dask_client.submit(_read_in_worker, payload, pure=False) for _ in range(2)]
    results = dask_client.gather(futures)
    local = open_source(str(root_files_local[name]))
    want = local.read(_some_fields(local), 10, 500)
    for pid, n, got in results:
        assert pid != os.getpid()
        assert n == local.num_entries
        for p, col in want.items():
            _assert_same(got[p], col)
    # and as a plain task argument, pickled by distributed itself
    assert dask_client.submit(lambda s: s.num_entries, remote).result() == local.num_entries
