"""Checkpoints that are either complete or ignored: write to a temp folder, mark it complete, rename.

    run/checkpoints/step-00000008/        a complete checkpoint (has COMPLETE)
    run/checkpoints/.tmp-step-00000010/   a write in progress, or one a crash left: never resumed from

The protocol (llm.c's DONE_ marker, allenai/open-instruct's COMPLETED file, SimpleTuner's temp dir):
1. every rank writes its files into ``.tmp-step-N`` (rank 0 creates it; a barrier separates the steps);
2. rank 0 writes ``COMPLETE`` last (a JSON list of the files and their sizes, fsynced);
3. rank 0 renames ``.tmp-step-N`` to ``step-N`` (atomic on one filesystem: both live in checkpoints/);
4. rank 0 deletes the oldest complete checkpoints beyond ``save_total_limit`` (never the new one).

A folder without ``COMPLETE``, or whose files do not have the sizes it lists, is not a checkpoint.
Only rank 0 renames and deletes, after a barrier (the failure mode of HF's reverted atomic saves,
transformers#27925/#36076, was several ranks renaming).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["COMPLETE", "checkpoints_root", "complete_checkpoints", "latest_checkpoint", "is_complete",
           "begin_checkpoint", "finish_checkpoint", "remove_stale_temps", "read_marker"]

COMPLETE = "COMPLETE"
_STEP = re.compile(r"^step-(\d{8})$")


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def _name(step: int) -> str:
    return f"step-{step:08d}"


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / COMPLETE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(path: Path) -> bool:
    """COMPLETE exists, parses, and every file it lists has the size it lists."""
    marker = read_marker(path)
    if not marker or not isinstance(marker.get("files"), dict):
        return False
    for name, size in marker["files"].items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            return False
    return True


def complete_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP.match(p.name)
        if m and p.is_dir() and is_complete(p):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def remove_stale_temps(output_dir: str | Path) -> list[Path]:
    """Delete ``.tmp-step-*`` folders a killed run left behind (they were never complete). Rank 0 only."""
    root = checkpoints_root(output_dir)
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-step-") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def begin_checkpoint(output_dir: str | Path, step: int) -> Path:
    """Create (empty) the temp folder for step ``step`` and return it. Rank 0 only; a barrier follows."""
    root = checkpoints_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_checkpoint(tmp: Path, step: int, meta: dict[str, Any], keep: int,
                      log: Callable[[str], None] = print) -> Path:
    """Mark ``tmp`` complete, rename it to ``step-N``, drop old checkpoints. Rank 0 only, after a barrier."""
    files = {}
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            _fsync(f)
            files[str(f.relative_to(tmp))] = f.stat().st_size
    marker = {**meta, "step": step, "files": files, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / COMPLETE).write_text(json.dumps(marker, indent=1))
    _fsync(tmp / COMPLETE)
    final = tmp.parent / _name(step)
    if final.exists():
        if is_complete(final):  # the same step saved before (a resumed run stopping where it started)
            shutil.rmtree(tmp)
            return final
        shutil.rmtree(final)  # a leftover without a valid marker is not a checkpoint
    os.replace(tmp, final)
    _fsync(final.parent)
    for _step, old in complete_checkpoints(final.parent.parent)[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
            log(f"removed checkpoint {old.name} (save_total_limit {keep})")
    return final
