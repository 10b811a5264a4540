"""Optional extras, checked before a command does any work.

    require_extra("train")   # MissingDependencyError naming the extra and the install command

The extras are declared in pyproject.toml ([project.optional-dependencies]); the modules below are the ones
each extra's commands import first.
"""

from __future__ import annotations

import importlib.util

from ftcalc.errors import MissingDependencyError

__all__ = ["require_extra", "EXTRAS"]

EXTRAS = {
    "train": ("torch", "transformers", "peft", "accelerate"),  # ftcalc run, ftcalc profile, inventory --exact
    "plot": ("matplotlib",),  # --plot, ftcalc report
}


def require_extra(extra: str, what: str) -> None:
    """Raise MissingDependencyError when a module of ``extra`` is not installed; ``what`` names the feature."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
                                     f"pip install 'ftcalc[{extra}]'")
