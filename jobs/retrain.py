"""Ray job entry point of a retrain: ``python jobs/retrain.py --config C [--trigger-window N]
[--parent V] [--report R]`` (submitted by the DriftMonitor, or by hand with ``ray job submit``).

The same code path as ``raymlops retrain`` (the CLI's ``main``); inside a Ray job the driver
joins the job's cluster through ``RAY_ADDRESS``, which Ray sets for it.
"""

import sys

from raymlops.cli import main

if __name__ == "__main__":
    sys.exit(main(["retrain", *sys.argv[1:]]))
