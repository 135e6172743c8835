"""Shared fixtures.  Each family lives in its own module beside this file:

* ``_fixtures_data.py``  the ROOT-written and uproot-written fixture files (tests/data/)
* ``_fixtures_s3.py``    loopback S3 servers: SeaweedFS (real object store) and moto
* ``_fixtures_dask.py``  a real distributed LocalCluster with worker processes
"""

from _fixtures_dask import *  # noqa: F403
from _fixtures_data import *  # noqa: F403
from _fixtures_s3 import *  # noqa: F403
