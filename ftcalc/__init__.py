"""ftcalc: GPU memory, time and cost planning for LLM fine-tuning (full, LoRA, QLoRA), checked against real runs.

    import ftcalc
    est = ftcalc.estimate("8b", method="qlora", seq_len=4096, batch_size=2, gpu="h100")
    print(est.device_used_bytes / 2**30, est.fits)

Importing ftcalc never imports torch or transformers; the functions that train or measure do.
"""

from __future__ import annotations

from ftcalc._version import __version__
from ftcalc.errors import FtcalcError

__all__ = ["estimate", "Estimate", "FtcalcError", "resolve_model", "list_models", "max_fit", "min_gpu", "compare", "recommend", "__version__"]


def __getattr__(name: str):  # lazy: `import ftcalc` stays cheap
    if name in ("estimate", "Estimate"):
        import importlib

        return getattr(importlib.import_module("ftcalc.model.estimator"), name)
    if name in ("recommend", "Recommendation"):
        import importlib

        return getattr(importlib.import_module("ftcalc.solver.search"), name)
    if name == "compare":
        import importlib

        return importlib.import_module("ftcalc.model.comparison").compare
    if name in ("max_fit", "min_gpu"):
        import importlib

        return getattr(importlib.import_module("ftcalc.model.fit"), name)
    if name in ("resolve_model", "list_models"):
        from ftcalc.tables import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module 'ftcalc' has no attribute {name!r}")
