"""Where the shipped data lives.

In a source checkout it is ``<repo>/data``; in an installed wheel the same folder ships as the package
``ftcalc._data``. Writers (``ftcalc profile --record``) use the checkout's folder when there is one.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


def data_dir() -> Path:
    """The folder holding models/, gpus.csv, coefficients.json, measurements/ ...

    ``FTCALC_DATA_DIR`` overrides it (tests, users with their own tables).
    """
    return _data_dir(os.environ.get("FTCALC_DATA_DIR"))


@lru_cache(maxsize=8)
def _data_dir(env: str | None) -> Path:
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "data"
    if (checkout / "models").is_dir():
        return checkout
    import ftcalc._data  # the installed copy

    return Path(ftcalc._data.__file__).resolve().parent


def repo_root() -> Path | None:
    """The source checkout holding this package, or None when installed from a wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "data").is_dir() else None
