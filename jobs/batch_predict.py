"""Ray job entry point for batch inference:
``ray job submit --working-dir . -- python jobs/batch_predict.py --config C --input I --output O``.
"""

import sys

from raymlops.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
