"""Measurement rows and their provenance, shared by ``ftcalc profile`` and ``ftcalc run --record``: the
schema version, library and driver versions, the git commit, and appending rows to a measurement file.

    from ftcalc.train.records import record_rows
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "liger-kernel"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def driver_version() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - provenance is best effort
        return None


def git_commit() -> str | None:
    if os.environ.get("FTCALC_GIT_COMMIT"):
        return os.environ["FTCALC_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def record_rows(rows: list[dict[str, Any]], path: str | None = None) -> Path:
    """Append measurement rows to ``record_file(path)``, atomically (ftcalc.safe_write.append_text)."""
    from ftcalc.safe_write import MEASUREMENT_MARKERS, append_text

    out = record_file(path)
    return append_text(out, "".join(json.dumps(row) + "\n" for row in rows), marker=MEASUREMENT_MARKERS,
                       what="measurement file")


def record_file(path: str | None = None) -> Path:
    """Where measurement rows go: ``path``, else data/measurements/runs-user.jsonl of a source checkout, else
    the per-user folder (user_data_dir()/measurements/runs-user.jsonl): an installed package is never written."""
    from ftcalc._paths import data_dir, repo_root, user_data_dir

    return Path(path) if path else (data_dir() if repo_root() else user_data_dir()) / "measurements" / "runs-user.jsonl"


def check_record_file(path: str | None = None) -> Path:
    """Refuse a measurement file that is not ftcalc's rows (before a run starts); returns the path."""
    from ftcalc.safe_write import MEASUREMENT_MARKERS, check_output

    out = record_file(path)
    if out.is_file() and out.stat().st_size == 0:
        return out
    return check_output(out, marker=MEASUREMENT_MARKERS, what="measurement file")
