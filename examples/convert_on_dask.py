"""Submit a conversion to a Dask cluster from Python.

    python examples/convert_on_dask.py tcp://scheduler:8786 's3://bucket/nano/*.root' s3://bucket/cache/jets

With no scheduler address, a LocalCluster with worker processes is started. Workers need no
shared file system: with an s3:// destination each worker writes its shards straight to the
object store. Endpoint and credentials come from the AWS_* environment variables here.
"""

import sys

from distributed import Client, LocalCluster

from rntensor.convert import convert


def main() -> None:
    address, inputs, output = sys.argv[1], sys.argv[2], sys.argv[3]
    if address == "local":
        client = Client(
            LocalCluster(
                n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
            )
        )
    else:
        client = Client(address)
    with client:
        result = convert("schemas/jet-tagging.yaml", [inputs], output, scheduler=client)
    print(result.summary())


if __name__ == "__main__":
    main()
