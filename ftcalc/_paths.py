"""Where the shipped data lives.

In a source checkout it is ``<repo>/data``; in an installed wheel the same folder ships as the package
``ftcalc._data``. Writers (``ftcalc profile --record``) use the checkout's folder when there is one.
"""

from __future__ import annotations

import contextvars
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


def user_data_dir() -> Path:
    """The per-user folder ftcalc writes its own data to (calibrated coefficients, measurement rows):
    ``$XDG_DATA_HOME/ftcalc``, else ``~/.local/share/ftcalc`` (the XDG Base Directory default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ftcalc"


# The coefficients file chosen for this call (ftcalc --coefficients FILE); None: FTCALC_COEFFICIENTS, else the
# shipped data/coefficients.json
_COEFFICIENTS: contextvars.ContextVar[str | None] = contextvars.ContextVar("ftcalc_coefficients", default=None)


def coefficients_file() -> Path:
    """The coefficients file estimates read: ``--coefficients FILE`` (use_coefficients), else the
    ``FTCALC_COEFFICIENTS`` environment variable, else the shipped data/coefficients.json. ``user`` in either
    means the file ``ftcalc calibrate`` writes by default (user_data_dir()/coefficients.json)."""
    chosen = _COEFFICIENTS.get() or os.environ.get("FTCALC_COEFFICIENTS")
    if not chosen:
        return data_dir() / "coefficients.json"
    if chosen == "user":
        return user_data_dir() / "coefficients.json"
    return Path(chosen).expanduser()


def coefficients_label(path: Path | None = None) -> str:
    """``path`` (default coefficients_file()) as output shows it: the shipped file by its repository name."""
    p = path or coefficients_file()
    return "shipped data/coefficients.json" if p == data_dir() / "coefficients.json" else str(p)


def use_coefficients(path: str | None) -> contextvars.Token:
    """Make ``path`` the coefficients file for this context (None: back to the default); returns the token."""
    return _COEFFICIENTS.set(path)


def repo_root() -> Path | None:
    """The source checkout holding this package, or None when installed from a wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "data").is_dir() else None
