"""``python -m raymlops``: the same CLI as the ``raymlops`` console script."""

from raymlops.cli import main

raise SystemExit(main())
