"""raymlops: the whole life of a tabular model on Ray.

Data and features on Ray Data, training and search on Ray Tune, a verifiable registry on one
storage URI, serving on Ray Serve, drift monitoring with Evidently. Importing raymlops starts
nothing: Ray is joined by the entry points (``raymlops ...``, ``jobs/*.py``).

Example:
    >>> import raymlops
    >>> raymlops.__version__
    '0.1.0'
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
