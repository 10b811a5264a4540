"""Errors a user can cause. The CLI prints ``str(err)`` on one line and exits with code 2.

Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "FtcalcError",
    "UnknownModelError",
    "ConfigError",
    "UnknownGPUError",
    "InvalidArgumentError",
    "DoesNotFitError",
    "DataFileError",
    "MissingDependencyError",
]


class FtcalcError(Exception):
    """Base class: a problem with the user's input, named in the message, with what would be valid."""


class UnknownModelError(FtcalcError):
    """A model name that is neither in the catalog, nor a local config, nor a reachable hub id."""


class ConfigError(FtcalcError):
    """A config.json that is malformed or lacks a field the estimator needs."""


class UnknownGPUError(FtcalcError):
    """A GPU name that is not in the GPU table."""


class InvalidArgumentError(FtcalcError):
    """A value out of range (zero batch, seq-len beyond the context, LoRA rank above the width...)."""


class DoesNotFitError(FtcalcError):
    """A constraint that no configuration satisfies."""


class DataFileError(FtcalcError):
    """A data file (prices, measurements, dataset) that cannot be read or does not validate."""


class MissingDependencyError(FtcalcError):
    """A feature that needs an optional extra (e.g. ``pip install '.[train]'`` in the ftcalc source folder)."""
