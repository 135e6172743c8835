"""Dask fixtures: a real ``distributed.LocalCluster`` with worker processes, on 127.0.0.1.

* ``dask_client`` (session): a ``distributed.Client`` on 2 worker processes x 1 thread, no
  dashboard (see :func:`rntensor.testing.local_cluster`).  Functions sent to it must be
  importable or defined inside the test (cloudpickle ships those by value); worker processes
  start with this process's ``sys.path``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["dask_client"]


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    pytest.importorskip("distributed")
    from rntensor.testing import local_cluster

    with local_cluster(n_workers=2, threads_per_worker=1, processes=True) as client:
        client.wait_for_workers(2, timeout=60)
        yield client
