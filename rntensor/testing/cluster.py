"""A ``distributed`` client on a loopback ``LocalCluster``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from rntensor.testing._net import LOOPBACK

__all__ = ["local_cluster"]


@contextlib.contextmanager
def local_cluster(
    n_workers: int = 2, threads_per_worker: int = 1, processes: bool = True, **kwargs: Any
) -> Iterator[Any]:
    """A ``distributed.Client`` on a ``LocalCluster`` bound to 127.0.0.1, no dashboards.

    Extra keyword arguments go to ``LocalCluster``.  Cluster and client are closed on exit.
    """
    from distributed import Client, LocalCluster

    # dashboard_address=None alone still serves the scheduler's HTTP routes on port 8787
    scheduler_kwargs = {
        "dashboard": False,
        "dashboard_address": f"{LOOPBACK}:0",
        **kwargs.pop("scheduler_kwargs", {}),
    }
    opts: dict[str, Any] = {
        "host": LOOPBACK,
        "scheduler_port": 0,
        "dashboard_address": None,
        "worker_dashboard_address": None,
        "silence_logs": logging.ERROR,
        "scheduler_kwargs": scheduler_kwargs,
        **kwargs,
    }
    with (
        LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=processes, **opts
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
