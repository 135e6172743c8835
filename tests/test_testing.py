"""rntensor.testing: the loopback S3 servers, the latency / fault proxy and the local cluster."""

from __future__ import annotations

import glob
import http.client
import os
import socket
import tempfile
import time

import psutil
import pytest

from rntensor.testing import LOOPBACK, LatencyProxy, MotoS3, SeaweedS3, free_port

pytestmark = pytest.mark.s3


def _refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((LOOPBACK, port)) != 0


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# -- SeaweedFS ---------------------------------------------------------------------------


def test_seaweed_command_line_is_loopback_only_without_telemetry(seaweed):
    cmd = seaweed.command()
    assert "-master.telemetry=false" in cmd
    assert f"-ip={LOOPBACK}" in cmd and f"-ip.bind={LOOPBACK}" in cmd
    assert "-webdav=false" in cmd and "-s3.port.iceberg=0" in cmd and "-s3.port.lance=0" in cmd
    assert seaweed.endpoint_url == f"http://{LOOPBACK}:{seaweed.ports['s3.port']}"


def test_seaweed_listens_on_loopback_only(seaweed):
    proc = psutil.Process(seaweed.pid)
    listening = [
        c.laddr
        for p in [proc, *proc.children(recursive=True)]
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening, "weed listens on no port"
    assert {a.ip for a in listening} == {LOOPBACK}
    assert {a.port for a in listening} <= set(seaweed.ports.values())


def test_seaweed_starts_and_stops_without_leftovers(tmp_path):
    tmp = tempfile.gettempdir()
    stray = {*glob.glob(f"{tmp}/weed.*"), *glob.glob(f"{tmp}/seaweedfs-*")}
    server = SeaweedS3()
    with server:
        root = psutil.Process(server.pid)
        procs = [root, *root.children(recursive=True)]
        assert any(p.name() == "weed" for p in procs)
        data_dir, port, tmp_dir = server.data_dir, server.ports["s3.port"], server._tmp_dir
        assert os.path.isdir(data_dir)
        server.make_bucket("startstop")
        src = tmp_path / "x.bin"
        src.write_bytes(b"abc" * 1000)
        assert server.upload(src, "s3://startstop/") == "s3://startstop/x.bin"
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs)
    assert not os.path.exists(data_dir) and not os.path.exists(tmp_dir)
    assert _refuses(port)
    assert {*glob.glob(f"{tmp}/weed.*"), *glob.glob(f"{tmp}/seaweedfs-*")} == stray
    server.stop()  # idempotent


def test_seaweed_range_reads_through_s3fs(seaweed, s3_bucket):
    fs = seaweed.filesystem()
    blob = os.urandom(3_000_000)
    fs.pipe(f"{s3_bucket}/dir/blob.bin", blob)
    got = fs.cat_file(f"{s3_bucket}/dir/blob.bin", start=1_000_000, end=1_000_100)
    assert got == blob[1_000_000:1_000_100]
    with fs.open(f"{s3_bucket}/dir/blob.bin", block_size=2**16) as f:
        f.seek(2_500_000)
        assert f.read(4096) == blob[2_500_000:2_504_096]
    assert fs.info(f"{s3_bucket}/dir/blob.bin")["size"] == len(blob)
    assert fs.find(s3_bucket) == [f"{s3_bucket}/dir/blob.bin"]


def test_seaweed_checks_credentials(seaweed, s3_bucket):
    import s3fs

    seaweed.filesystem().pipe(f"{s3_bucket}/k", b"x")
    opts = {**seaweed.storage_options, "secret": "not-the-secret"}
    bad = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
    with pytest.raises(PermissionError):
        bad.cat_file(f"{s3_bucket}/k")


def test_s3_server_interface(seaweed):
    opts = seaweed.storage_options
    assert opts["endpoint_url"] == seaweed.endpoint_url
    assert (opts["key"], opts["secret"]) == (seaweed.key, seaweed.secret)
    assert opts["client_kwargs"] == {"region_name": "us-east-1"}
    env = seaweed.env
    assert env["AWS_ENDPOINT_URL"] == seaweed.endpoint_url
    assert env["AWS_SECRET_ACCESS_KEY"] == seaweed.secret
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


# -- moto --------------------------------------------------------------------------------


def test_moto_range_reads_and_reset(moto_s3, tmp_path):
    src = tmp_path / "blob.bin"
    blob = os.urandom(100_000)
    src.write_bytes(blob)
    assert moto_s3.make_bucket("mbucket") == "s3://mbucket"
    url = moto_s3.upload(src, "s3://mbucket/a/")
    assert url == "s3://mbucket/a/blob.bin"
    fs = moto_s3.filesystem()
    assert fs.cat_file("mbucket/a/blob.bin", start=10, end=20) == blob[10:20]
    moto_s3.reset()
    assert moto_s3.filesystem().ls("", refresh=True) == []


def test_moto_bucket_is_gone_in_the_next_test(moto_s3):
    assert moto_s3.filesystem().ls("", refresh=True) == []


def test_moto_starts_and_stops():
    with MotoS3() as server:
        port = _port(server.endpoint_url)
        assert server.endpoint_url.startswith(f"http://{LOOPBACK}:")
        assert server.make_bucket("startstop") == "s3://startstop"
    assert _refuses(port)


# -- LatencyProxy ------------------------------------------------------------------------


def _get(conn: http.client.HTTPConnection, path: str = "/") -> int:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp.status


def test_proxy_adds_latency_per_request(seaweed, s3_bucket):
    import s3fs

    seaweed.filesystem().pipe(f"{s3_bucket}/blob", os.urandom(100_000))
    latency, n = 0.1, 4
    with LatencyProxy.from_url(seaweed.endpoint_url, latency_s=latency) as proxy:
        opts = {**seaweed.storage_options, "endpoint_url": proxy.endpoint_url}
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
        t0 = time.perf_counter()
        for i in range(n):
            assert len(fs.cat_file(f"{s3_bucket}/blob", start=i * 100, end=i * 100 + 10)) == 10
        elapsed = time.perf_counter() - t0
        assert proxy.requests >= n
    assert elapsed >= n * latency


def test_proxy_frames_keep_alive_requests(seaweed):
    with LatencyProxy.from_url(seaweed.endpoint_url, latency_s=0.0) as proxy:
        conn = http.client.HTTPConnection(LOOPBACK, proxy.port, timeout=10)
        try:
            statuses = [_get(conn, f"/?n={i}") for i in range(3)]
        finally:
            conn.close()
        assert statuses == [403, 403, 403]  # anonymous requests reach SeaweedFS
        assert (proxy.connections, proxy.requests, proxy.faults) == (1, 3, 0)


def test_proxy_answers_503_every_nth_request(seaweed):
    with LatencyProxy.from_url(
        seaweed.endpoint_url, latency_s=0.0, fail_every=2, fail_mode="503"
    ) as proxy:
        statuses = []
        for _ in range(4):
            conn = http.client.HTTPConnection(LOOPBACK, proxy.port, timeout=10)
            try:
                statuses.append(_get(conn))
            finally:
                conn.close()
        assert statuses == [403, 503, 403, 503]
        assert proxy.faults == 2


def test_proxy_resets_every_nth_request(seaweed):
    with LatencyProxy.from_url(
        seaweed.endpoint_url, latency_s=0.0, fail_every=2, fail_mode="reset"
    ) as proxy:
        conn = http.client.HTTPConnection(LOOPBACK, proxy.port, timeout=10)
        try:
            assert _get(conn) == 403
            with pytest.raises((ConnectionError, http.client.HTTPException)):
                _get(conn)
        finally:
            conn.close()
        assert proxy.faults == 1


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_s3fs_retries_through_injected_faults(seaweed, s3_bucket, mode):
    import s3fs

    blob = os.urandom(200_000)
    seaweed.filesystem().pipe(f"{s3_bucket}/blob", blob)
    with LatencyProxy.from_url(
        seaweed.endpoint_url, latency_s=0.0, fail_every=3, fail_mode=mode
    ) as proxy:
        opts = {**seaweed.storage_options, "endpoint_url": proxy.endpoint_url}
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **opts)
        got = [
            fs.cat_file(f"{s3_bucket}/blob", start=i, end=i + 1000) for i in range(0, 6000, 1000)
        ]
        assert b"".join(got) == blob[:6000]
        assert proxy.faults >= 1


def test_proxy_validates_and_stops():
    with pytest.raises(ValueError, match="loopback"):
        LatencyProxy("192.0.2.1", 80)
    with pytest.raises(ValueError, match="loopback"):
        LatencyProxy.from_url("http://192.0.2.1:80")
    with pytest.raises(ValueError, match="PORT"):
        LatencyProxy.from_url("https://127.0.0.1")
    with pytest.raises(ValueError, match="fail_every"):
        LatencyProxy(LOOPBACK, 80, fail_every=0)
    with pytest.raises(ValueError, match="fail_mode"):
        LatencyProxy(LOOPBACK, 80, fail_mode="explode")  # type: ignore[arg-type]
    with LatencyProxy(LOOPBACK, free_port()) as proxy:
        port = proxy.port
        assert proxy.endpoint_url == f"http://{LOOPBACK}:{port}"
    assert _refuses(port)


# -- local_cluster -----------------------------------------------------------------------


def test_dask_client_is_a_loopback_process_cluster(dask_client):
    info = dask_client.scheduler_info()
    assert dask_client.scheduler.address.startswith(f"tcp://{LOOPBACK}:")
    workers = info["workers"]
    assert len(workers) == 2
    assert all(addr.startswith(f"tcp://{LOOPBACK}:") for addr in workers)
    assert all(w["nthreads"] == 1 for w in workers.values())
    pids = set(dask_client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids
    listening = {
        c.laddr
        for pid in [*pids, os.getpid()]
        for c in psutil.Process(pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert {a.ip for a in listening} == {LOOPBACK}
    assert 8787 not in {a.port for a in listening}  # no fixed dashboard port
