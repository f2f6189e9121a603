"""Ray job entry point: ``ray job submit --working-dir . -- python jobs/train.py --config C``.

The same code path as ``raymlops train`` (it calls the CLI's ``main``); inside a Ray job the
driver joins the job's cluster through ``RAY_ADDRESS``, which Ray sets for it.
"""

import sys

from raymlops.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
