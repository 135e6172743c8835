"""Loopback test infrastructure shared by the tests and the benchmarks.

* :class:`SeaweedS3`: a real object store (``weed mini``) on free loopback ports.
* :class:`MotoS3`: moto's threaded S3 server on a free loopback port, resettable.
* :class:`LatencyProxy`: a TCP proxy that adds latency per HTTP request and injects faults.
* :func:`local_cluster`: a ``distributed`` client on a loopback ``LocalCluster``.

Every server binds ``127.0.0.1`` only, picks free ports, and has a bounded lifetime: it stops
when its ``with`` block ends, at interpreter exit, and after ``max_lifetime_s`` at the latest.
The S3 servers share one interface: ``endpoint_url``, ``key``, ``secret``, ``region``,
``storage_options`` (for s3fs / uproot / rntensor), ``env`` (``AWS_*`` variables),
``filesystem()``, ``make_bucket(name)`` and ``upload(local_path, url)``.
This module imports no pytest; heavy dependencies are imported when used.
"""

# the modules: _net (loopback helpers), s3 (the S3 servers), proxy, cluster
from rntensor.testing._net import LOOPBACK as LOOPBACK
from rntensor.testing._net import free_port
from rntensor.testing.cluster import local_cluster
from rntensor.testing.proxy import FailMode as FailMode
from rntensor.testing.proxy import LatencyProxy
from rntensor.testing.s3 import MotoS3, SeaweedS3
from rntensor.testing.s3 import _weed_binary as _weed_binary  # used by the test fixtures

__all__ = ["LatencyProxy", "MotoS3", "SeaweedS3", "free_port", "local_cluster"]
