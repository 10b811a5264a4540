"""The GPU table: data/gpus.csv, one row per GPU product, with aliases.

    ftcalc gpus                          # list the table (gpus_dataframe)
    ftcalc estimate --gpu h100 ...       # 'h100' -> h100-sxm

Each row carries its ``source`` and ``date``; what every column means is in docs/notes/data-tables.md.
``get_gpu`` resolves a slug, an alias, or a device name as the driver prints it ("NVIDIA H100 80GB
HBM3", "NVIDIA A100-SXM4-80GB") case-insensitively. Only the stdlib is imported here, so that
``import ftcalc.tables.hardware`` plus a lookup stays in the millisecond range; pandas is imported inside
``gpus_dataframe`` alone.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError, UnknownGPUError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["GPU", "load_gpus", "get_gpu", "gpus_dataframe", "normalize_gpu_name"]

INTERCONNECTS = ("nvlink", "pcie", "xgmi", "none")
FORMS = ("sxm", "pcie", "oam")
# How memory_bytes was obtained (docs/notes/data-tables.md):
#   cuda_measured: cuMemGetInfo total on a real card (what torch.cuda reports as total_memory)
#   nvidia_smi:    nvidia-smi memory.total MiB x 2^20; runs ~0.6 % above the CUDA total (H100: +480 MiB)
#   rocm_smi:      rocm-smi "VRAM Total Memory (B)"
#   marketed:      memory_gb x 1e9, when no reading was found
MEMORY_BASES = ("cuda_measured", "nvidia_smi", "rocm_smi", "marketed")


@dataclass(frozen=True)
class GPU:
    """One row of data/gpus.csv. Units are in the names: GB = 1e9 bytes, TFLOPS = 1e12 FLOP/s."""

    gpu: str  # slug, the id used everywhere else (prices.csv, measurements)
    aliases: tuple[str, ...]
    name: str
    vendor: str
    memory_gb: float  # as marketed, decimal GB
    memory_bytes: int  # total the driver reports (see memory_basis)
    memory_basis: str
    memory_bandwidth_gbps: float  # GB/s
    bf16_dense_tflops: float  # without 2:4 sparsity
    fp8_dense_tflops: float  # 0 when the GPU has no FP8 tensor cores
    interconnect: str  # nvlink | pcie | xgmi | none
    interconnect_gbps: float  # per-GPU bidirectional GB/s of that link
    p2p: bool  # peer-to-peer between GPUs of one node works (False on RTX 4090)
    form: str  # sxm | pcie | oam
    max_gpus_per_node: int
    tdp_w: float | None
    source: str
    date: str
    notes: str

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30

    @property
    def bf16_dense_flops_per_s(self) -> float:
        return self.bf16_dense_tflops * 1e12

    @property
    def fp8_dense_flops_per_s(self) -> float:
        return self.fp8_dense_tflops * 1e12

    @property
    def has_fp8(self) -> bool:
        return self.fp8_dense_tflops > 0


_REQUIRED = tuple(f.name for f in fields(GPU) if f.name not in ("tdp_w", "memory_basis"))


def normalize_gpu_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': lowercase, runs of space/_ / to '-'."""
    return re.sub(r"[\s_/]+", "-", name.strip().lower()).strip("-")


def _default_path() -> Path:
    return data_dir() / "gpus.csv"


def load_gpus(path: str | Path | None = None) -> dict[str, GPU]:
    """All GPUs by slug, read once per path and cached.

    Args:
        path: a gpus.csv; default ``data_dir()/"gpus.csv"``.
    Raises:
        DataFileError: a missing file, a missing column, a bad value or a clashing alias, with file and line.
    """
    return dict(_load(str(Path(path) if path is not None else _default_path()))[0])


@lru_cache(maxsize=8)
def _load(path: str) -> tuple[dict[str, GPU], dict[str, str]]:
    """(slug -> GPU, every accepted spelling -> slug) for one file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise DataFileError(f"{path}: cannot read the GPU table ({e.strerror})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise DataFileError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(_REQUIRED)}"
        )
    gpus: dict[str, GPU] = {}
    names: dict[str, str] = {}
    for raw in reader:
        line = reader.line_num
        gpu = _parse_row(path, line, raw)
        for spelling in (gpu.gpu, *gpu.aliases):
            key = normalize_gpu_name(spelling)
            if key in names and names[key] != gpu.gpu:
                raise DataFileError(
                    f"{path}, line {line}: name '{spelling}' of '{gpu.gpu}' is already used by '{names[key]}'"
                )
            names[key] = gpu.gpu
        gpus[gpu.gpu] = gpu
    if not gpus:
        raise DataFileError(f"{path}: no GPU rows")
    return gpus, names


def _parse_row(path: str, line: int, raw: dict[str, str]) -> GPU:
    def bad(column: str, expected: str) -> DataFileError:
        return DataFileError(f"{path}, line {line}, column '{column}': '{raw.get(column)}' is not {expected}")

    def num(column: str) -> float:
        try:
            value = float(raw[column])
        except (TypeError, ValueError):
            raise bad(column, "a number") from None
        if value < 0:
            raise bad(column, "a number >= 0")
        return value

    def choice(column: str, allowed: tuple[str, ...]) -> str:
        value = (raw.get(column) or "").strip().lower()
        if value not in allowed:
            raise bad(column, "one of " + "|".join(allowed))
        return value

    slug = (raw.get("gpu") or "").strip()
    if not slug or slug != normalize_gpu_name(slug):
        raise bad("gpu", "a lowercase slug such as 'h100-sxm'")
    for column in ("source", "date"):
        if not (raw.get(column) or "").strip():
            raise bad(column, "filled in (every row names its source and date)")
    try:
        memory_bytes = int(raw["memory_bytes"])
    except (TypeError, ValueError):
        raise bad("memory_bytes", "an integer number of bytes") from None
    p2p = (raw.get("p2p") or "").strip().lower()
    if p2p not in ("true", "false"):
        raise bad("p2p", "true or false")
    max_gpus = num("max_gpus_per_node")
    if max_gpus < 1 or max_gpus != int(max_gpus):
        raise bad("max_gpus_per_node", "an integer >= 1")
    tdp = (raw.get("tdp_w") or "").strip()
    return GPU(
        gpu=slug,
        aliases=tuple(a.strip().lower() for a in (raw.get("aliases") or "").split(";") if a.strip()),
        name=raw["name"].strip(),
        vendor=raw["vendor"].strip().lower(),
        memory_gb=num("memory_gb"),
        memory_bytes=memory_bytes,
        memory_basis=choice("memory_basis", MEMORY_BASES) if raw.get("memory_basis") else "marketed",
        memory_bandwidth_gbps=num("memory_bandwidth_gbps"),
        bf16_dense_tflops=num("bf16_dense_tflops"),
        fp8_dense_tflops=num("fp8_dense_tflops"),
        interconnect=choice("interconnect", INTERCONNECTS),
        interconnect_gbps=num("interconnect_gbps"),
        p2p=p2p == "true",
        form=choice("form", FORMS),
        max_gpus_per_node=int(max_gpus),
        tdp_w=num("tdp_w") if tdp else None,
        source=raw["source"].strip(),
        date=raw["date"].strip(),
        notes=(raw.get("notes") or "").strip(),
    )


def get_gpu(name: str | GPU, path: str | Path | None = None) -> GPU:
    """The GPU for a slug, alias or driver device name, case-insensitively.

    Example:
        >>> get_gpu("H100").gpu
        'h100-sxm'
    Raises:
        UnknownGPUError: naming the input and the closest known names.
    """
    if isinstance(name, GPU):
        return name
    gpus, names = _load(str(Path(path) if path is not None else _default_path()))
    key = normalize_gpu_name(str(name))
    for candidate in (key, key.removeprefix("nvidia-"), key.removeprefix("amd-")):
        if candidate in names:
            return gpus[names[candidate]]
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, list(names), n=4, cutoff=0.5)
    suggestions = list(dict.fromkeys(names[c] for c in close))
    hint = (
        f"did you mean {', '.join(repr(s) for s in suggestions)}?"
        if suggestions
        else f"known GPUs: {', '.join(sorted(gpus))}"
    )
    raise UnknownGPUError(f"unknown GPU '{name}'; {hint} (see `ftcalc gpus`)")


def gpus_dataframe(path: str | Path | None = None) -> pd.DataFrame:
    """The GPU table as a DataFrame (one row per GPU, columns as in gpus.csv plus memory_gib)."""
    import pandas as pd

    records = []
    for g in load_gpus(path).values():
        record = {f.name: getattr(g, f.name) for f in fields(GPU)}
        record["aliases"] = ";".join(g.aliases)
        record["memory_gib"] = round(g.memory_gib, 2)
        records.append(record)
    return pd.DataFrame.from_records(records)
