"""``python -m rntensor.bench``: the benchmark run, or one measurement with ``--child``."""

import sys

from rntensor.bench.command import main

if __name__ == "__main__":
    sys.exit(main())
