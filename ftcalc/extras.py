"""Optional extras, checked before a command does any work.

    require_extra("train")   # MissingDependencyError naming the extra and the install command

The extras are declared in pyproject.toml ([project.optional-dependencies]); the modules below are the ones
each extra's commands import first.
"""

from __future__ import annotations

import importlib.util

from ftcalc.errors import MissingDependencyError

__all__ = ["require_extra", "install_command", "EXTRAS"]

EXTRAS = {
    "train": ("torch", "transformers", "peft", "accelerate"),  # ftcalc run, ftcalc profile, inventory --exact
    "plot": ("matplotlib",),  # --plot, ftcalc report
}


def require_extra(extra: str, what: str) -> None:
    """Raise MissingDependencyError when a module of ``extra`` is not installed; ``what`` names the feature."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"{what} needs the [{extra}] extra ({', '.join(missing)} not installed): "
                                     f"{install_command(extra)}")


def install_command(extra: str) -> str:
    """How to add an extra: from the source folder ftcalc is installed from (ftcalc is not on a package index;
    ``pip install 'ftcalc[...]'`` there would fetch another project's package)."""
    return f"pip install '.[{extra}]' in the ftcalc source folder"
