"""ftcalc beside the trainers people run: their config files (``--from``) and a Trainer callback.

    ftcalc estimate --from axolotl.yml --gpu rtx-4090
    trainer = Trainer(..., callbacks=[FtcalcCallback(gpu="rtx-4090")])

Nothing here imports transformers or torch at import time; :class:`FtcalcCallback` is built on first use
(``transformers.TrainerCallback`` is its base).
"""

from __future__ import annotations

from typing import Any

from ftcalc.integrations.trainer_config import TrainerConfig, detect_format, map_config, read_trainer_config

__all__ = ["TrainerConfig", "read_trainer_config", "map_config", "detect_format", "FtcalcCallback"]


def __getattr__(name: str) -> Any:  # FtcalcCallback subclasses transformers.TrainerCallback: import on first use
    if name == "FtcalcCallback":
        from ftcalc.integrations.callback import FtcalcCallback

        return FtcalcCallback
    raise AttributeError(f"module 'ftcalc.integrations' has no attribute {name!r}")
